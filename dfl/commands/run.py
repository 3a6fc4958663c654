"""`dfl run CONFIG [--set k=v ...] [--out DIR] [--overwrite | --resume DIR]`.

A config with list-valued keys runs every combination, one after another, into DIR/<run>/
(a sweep directory) and prints their final metrics side by side.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from ..config import load_config, parse_overrides, read_toml, from_dict
from ..errors import DflError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run an experiment (or every variant of a list-valued config)",
                       description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="TOML config (not needed with --resume)")
    add_common(p)
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    return p


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override a config key (repeatable), e.g. --set local.lr=0.05")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def default_out(config: str) -> Path:
    return Path("runs") / Path(config).stem


def run(args: argparse.Namespace) -> int:
    from .. import results, sweep

    if args.resume:
        return resume(args)
    if not args.config:
        raise DflError("run: give a CONFIG file (or --resume DIR)")
    axes, variants = sweep.load(args.config, parse_overrides(args.set))
    out = Path(args.out) if args.out else default_out(args.config)
    results.check_out(out, overwrite=args.overwrite)
    sim = preflight([v.config for v in variants], keep=not axes)
    results.prepare(out, overwrite=args.overwrite)
    summaries = []
    if axes:
        sweep.write_index(out, args.config, axes, variants)
        for v in variants:
            run_dir = results.prepare(out / v.name)
            summaries.append(run_one(v.config, run_dir, quiet=args.quiet, title=v.name))
    else:
        summaries.append(run_one(variants[0].config, out, quiet=args.quiet, sim=sim))
    print_table(summaries)
    print(f"results in {out}")
    return 0


def resume(args: argparse.Namespace) -> int:
    from .. import results

    path = results.prepare(Path(args.resume), resume=True)
    raw = read_toml(path / "config.toml")
    cfg = from_dict(raw, str(path / "config.toml"))
    if args.set:
        raise DflError("--resume continues the saved config; --set is not allowed with it")
    summary = run_one(cfg, path, quiet=args.quiet, resume_state=results.load_checkpoint(path))
    print_table([summary])
    return 0


def preflight(configs: list[Any], keep: bool = False) -> Any:
    """Build every variant's Simulation (data, model, graph, W) once, so that each user error is
    raised before the output directory is created or touched. Returns the last Simulation when
    `keep` (a single run reuses it), else None (each variant is rebuilt when it runs)."""
    from ..simulation import Simulation

    for i, cfg in enumerate(configs):
        sim = Simulation(cfg)
        if keep and i == len(configs) - 1:
            return sim
        getattr(sim, "close", lambda: None)()  # engines holding resources (Ray actors)
    return None


def run_one(cfg, out: Path, *, quiet: bool = False, title: str = "",
            resume_state: Optional[dict[str, Any]] = None, sim: Any = None) -> dict[str, Any]:
    """Build the simulation (unless given), run it with a progress bar, write the run directory."""
    from .. import results
    from ..simulation import Simulation
    from ..progress import Progress

    sim = sim if sim is not None else Simulation(cfg)
    if resume_state is not None:
        results.check_state(resume_state, sim, out)
    writer = results.RunDir(out, sim.cfg, resume=resume_state is not None)
    if resume_state is not None:
        sim.load_state_dict(resume_state)
        writer.rewrite_metrics(sim.history)
    try:
        with Progress(sim.cfg, title or sim.cfg.label(), quiet=quiet, start=sim.round) as bar:
            def on_round(s, row):
                writer(s, row)
                bar.update(s.round, row)
            sim.run(on_round)
        return writer.finish(sim)
    finally:
        sim.close()  # actors / a local Ray go away with the run, also on errors and Ctrl-C


def print_table(summaries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="final metrics")
    for col in ("run", "rounds", "test acc", "best acc", "local acc", "consensus", "gap", "MB sent", "time s"):
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for s in summaries:
        f = s["final"]
        table.add_row(s["label"], str(s["rounds"]), f"{f['test_acc']:.4f}", f"{s['best']['test_acc']:.4f}",
                      f"{f['local_test_acc']:.4f}", f"{f['consensus']:.3e}", f"{f['spectral_gap']:.4f}",
                      f"{f['comm_mb']:.1f}", f"{f['wall_s']:.1f}")
    console = Console()
    console.width = max(console.width, 140)
    console.print(table)
