"""`dfl run CONFIG [--set k=v ...] [--out DIR] [--overwrite | --resume DIR]`.

A config with list-valued keys runs every combination, one after another, into DIR/<run>/
(a sweep directory) and prints their final metrics side by side.

A run uses as many torch threads as the CPUs it may use (dfl.cpus) unless engine.threads is
set. SIGTERM / SIGINT stop it after the round in progress, with a checkpoint (exit 143 / 130).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from ..config import from_dict, parse_overrides, read_toml
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


def expand_config(args: argparse.Namespace,
                  command: str) -> tuple[dict[str, Any], dict[str, list[Any]], list[Any], Path]:
    """What `dfl run` and `dfl sweep` start from: (raw config with the --set overrides, its axes,
    its variants, the output directory), the directory checked (exists without --overwrite: a
    DflError) before anything is written."""
    from .. import sweep
    from ..rundir.write import check_out

    if not args.config:
        raise DflError(f"{command}: give a CONFIG file (or --resume DIR)")
    raw = sweep.read(args.config, parse_overrides(args.set))
    axes, variants = sweep.expand(raw, args.config)
    out = Path(args.out) if args.out else default_out(args.config)
    check_out(out, overwrite=args.overwrite)
    return raw, axes, variants, out


def run(args: argparse.Namespace) -> int:
    from .. import sweep
    from ..rundir.write import prepare

    if args.resume:
        return resume(args)
    raw, axes, variants, out = expand_config(args, "run")
    sim = preflight([v.config for v in variants], keep=not axes)
    prepare(out, overwrite=args.overwrite)
    if axes:  # one after another, as `dfl sweep --jobs 1` (a failed run does not stop the others)
        from .sweep import Task, execute

        sweep.write_index(out, args.config, axes, variants, raw)
        return execute(out, [Task(v.name, v.config, out / v.name, False) for v in variants], 1, args.quiet)
    print_table([run_one(variants[0].config, out, quiet=args.quiet, sim=sim)])
    print(f"results in {out}")
    return 0


def resume(args: argparse.Namespace) -> int:
    from ..rundir.checkpoint import CHECKPOINT, load_checkpoint
    from ..rundir.write import prepare

    path = Path(args.resume)
    if (path / "config.toml").is_file() and not (path / CHECKPOINT).exists():
        raise DflError(f"--resume {path}: no {CHECKPOINT} yet (the run stopped before its first round "
                       f"ended); start it again: dfl run {path / 'config.toml'} --out {path} --overwrite")
    path = prepare(path, resume=True)
    raw = read_toml(path / "config.toml")
    cfg = from_dict(raw, str(path / "config.toml"))
    if args.set:
        raise DflError("--resume continues the saved config; --set is not allowed with it")
    summary = run_one(cfg, path, quiet=args.quiet, resume_state=load_checkpoint(path))
    print_table([summary])
    return 0


def preflight(configs: list[Any], keep: bool = False) -> Any:
    """Build every variant's Simulation (data, model, graph, W) once, so that each user error is
    raised before the output directory is created or touched. Returns the last Simulation when
    `keep` (a single run reuses it), else None (each variant is rebuilt when it runs)."""
    from .. import tracking
    from ..simulation import Simulation

    tracking.check(configs)  # trackers installed and reachable ([logging])
    for i, cfg in enumerate(configs):
        sim = Simulation(cfg)
        if keep and i == len(configs) - 1:
            return sim
        getattr(sim, "close", lambda: None)()  # engines holding resources (Ray actors)
    return None


def run_one(cfg, out: Path, *, quiet: bool = False, title: str = "",
            resume_state: Optional[dict[str, Any]] = None, sim: Any = None,
            share: int = 1) -> dict[str, Any]:
    """Build the simulation (unless given), run it with a progress bar, write the run directory.

    torch runs with engine.threads threads, or this process's CPUs divided by ``share`` (the
    jobs of a sweep running side by side); the previous count comes back afterwards. SIGTERM /
    SIGINT: the round in progress ends, a checkpoint is written, then ``Interrupted``."""
    from .. import cpus

    with cpus.torch_threads(cpus.auto_threads(cfg.engine.threads, share)):
        return _run_one(cfg, out, quiet=quiet, title=title, resume_state=resume_state, sim=sim)


def _run_one(cfg, out: Path, *, quiet: bool, title: str, resume_state: Optional[dict[str, Any]],
             sim: Any) -> dict[str, Any]:
    import sys

    from .. import tracking
    from ..errors import Interrupted
    from ..progress import Progress
    from ..rundir.checkpoint import check_state
    from ..rundir.write import RunDir
    from ..simulation import Simulation
    from ..stopping import StopOnSignal, signal_name

    sim = sim if sim is not None else Simulation(cfg)
    if resume_state is not None:
        check_state(resume_state, (len(sim.steps), sim.layout.size), sim.cfg.rounds, out)
    if not quiet and sim.engine.summary_line():  # the engine's choices and memory estimate
        print(f"dfl: {sim.engine.summary_line()}", file=sys.stderr)
    trackers = tracking.start(sim.cfg, out, title=title,  # [logging]: callbacks beside the writer
                              start_round=int(resume_state["round"]) if resume_state is not None else 0)
    writer = RunDir(out, sim.cfg, resume=resume_state is not None)
    if resume_state is not None:
        sim.load_state_dict(resume_state)
        writer.rewrite_metrics(sim.history)
        writer.saved_round = sim.round

    def how_to_resume() -> str:
        if writer.saved_round is None:
            return f"no checkpoint yet; start again with: dfl run {out / 'config.toml'} --out {out} --overwrite"
        return f"continue from round {writer.saved_round} with: dfl run --resume {out}"

    def at_once(signum: int) -> str:
        return f"stopped by {signal_name(signum)} during round {sim.round + 1}; {how_to_resume()}"

    try:
        with StopOnSignal(at_once) as stop, \
                Progress(sim.cfg, title or sim.cfg.label(), quiet=quiet, start=sim.round) as bar:
            def on_round(s, row):
                writer.append(row)
                trackers.log_row(row)
                bar.update(s.round, row)

            def after_round(s):
                writer.after_round(s.round, s.state_dict)
                if stop.requested and s.round < s.cfg.rounds:
                    if writer.saved_round != s.round:
                        writer.checkpoint(s.round, s.state_dict())
                    raise Interrupted(f"stopped by {signal_name(stop.signum)} after round {s.round} of "
                                      f"{s.cfg.rounds} (checkpoint written); continue with: dfl run --resume {out}",
                                      stop.signum)
            sim.run(on_round, after_round)
        summary = writer.finish(sim.history, sim.round, sim.describe())
        trackers.finish(summary)
        return summary
    finally:
        trackers.close(sys.exc_info()[1])  # tracker runs left open: failed / killed
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
