"""`dfl bench [--quick] [--rows abcde] [--out FILE.json]`: the speed table (ratios within one run).

`dfl bench --paper [--quick]`: the DFedSAM paper's CIFAR-10 setup on synthetic CIFAR-shaped data,
seconds per round and the projected hours of the full run, next to the papers' loop."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="benchmark the engine (ratios measured within one run)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: checks that every row runs (CI)")
    p.add_argument("--rows", default="abcde", help="which rows to run (default abcde)")
    p.add_argument("--out", default="", help="JSON output (default bench.json; bench_paper.json with --paper)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    p.add_argument("--paper", action="store_true",
                   help="time the paper's CIFAR-10 setup (experiments/paper) on synthetic data instead of the rows")
    p.add_argument("--model", default="", help="with --paper: another model than the config's vgg11 (e.g. resnet18)")
    return p


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        v = " ".join(map(str, v))
    if isinstance(v, str) and len(v) > 60:
        return v[:57] + "..."
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    titles = {"ab": "a/b  round time: vectorized vs per-client loop vs pooled compute limit",
              "c": "c  gossip X <- W X vs a memory copy", "d": "d  scale: memory per client",
              "e": "e  end to end: dfl run vs Flower simulation; Ray vs vectorized"}
    for key, title in titles.items():
        rows = result.get(key)
        if not rows:
            continue
        table = Table(title=title)
        cols = list(dict.fromkeys(k for r in rows for k in r))
        for c in cols:
            table.add_column(c, justify="right", no_wrap=True)
        for r in rows:
            table.add_row(*[_fmt(r.get(c, "")) for c in cols])
        console.print(table)
    console.print(f"device: {result['device']}, torch threads: {result['threads']}, torch {result['torch']}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import QUICK, Sizes, run_all
    from ..errors import DflError

    bad = set(args.rows) - set("abcde")
    if bad or not args.rows:
        raise DflError(f"--rows: letters from abcde, got {args.rows!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.paper:
        return run_paper(args)
    out = args.out or "bench.json"
    result = run_all(QUICK if args.quick else Sizes(), args.rows)
    print_tables(result)
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written {out}")
    return 0


def run_paper(args: argparse.Namespace) -> int:
    """--paper: the table of dfl.bench.paper, a few lines on what it means, and its JSON."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from dataclasses import replace

    from ..bench.paper import PAPER_QUICK, PaperSizes, paper_rows, summary_lines

    result = paper_rows(replace(PAPER_QUICK if args.quick else PaperSizes(), model=args.model))
    result.update(threads=torch.get_num_threads(), torch=torch.__version__)
    table = Table(title="paper  seconds per round and projected hours of the full run")
    cols = ("what", "strategy", "precision", "s_per_round", "x_faster_than_papers_loop", "projected_hours")
    for c in cols:
        table.add_column(c, justify="right", no_wrap=True)
    for r in result["rows"]:
        table.add_row(*[_fmt(r.get(c)) if r.get(c) is not None else "" for c in cols])
    console = Console(width=160)
    console.print(table)
    for line in summary_lines(result):
        console.print(line)
    out = args.out or "bench_paper.json"
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written {out}")
    return 0
