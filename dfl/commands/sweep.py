"""`dfl sweep CONFIG [--set k=v ...] [--out DIR] [--jobs N]`: every combination of the config's
list-valued keys, one run directory each under one sweep directory, in N parallel processes."""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ..config import parse_overrides
from .run import add_common, default_out, preflight, print_table, run_one


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run the cartesian product of a config's list-valued keys",
                       description=__doc__.splitlines()[0])
    p.add_argument("config", help="TOML config with list-valued keys (axes)")
    add_common(p)
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    return p


def _worker(cfg, out: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    return run_one(cfg, Path(out), quiet=True)


def run(args: argparse.Namespace) -> int:
    from .. import results, sweep
    from ..errors import DflError

    if args.jobs < 1:
        raise DflError(f"--jobs: must be >= 1, got {args.jobs}")
    axes, variants = sweep.load(args.config, parse_overrides(args.set))
    out = Path(args.out) if args.out else default_out(args.config)
    results.check_out(out, overwrite=args.overwrite)
    preflight([v.config for v in variants])  # every user error before the directory is touched
    results.prepare(out, overwrite=args.overwrite)
    sweep.write_index(out, args.config, axes, variants)
    dirs = [results.prepare(out / v.name) for v in variants]
    if args.jobs == 1:
        summaries = [run_one(v.config, d, quiet=args.quiet, title=v.name) for v, d in zip(variants, dirs)]
    else:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_worker, v.config, str(d), threads) for v, d in zip(variants, dirs)]
            summaries = [f.result() for f in futures]
    print_table(summaries)
    print(f"sweep of {len(variants)} runs in {out}")
    return 0
