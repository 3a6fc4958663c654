"""`dfl sweep CONFIG [--set k=v ...] [--out DIR] [--jobs N]` and `dfl sweep --resume DIR [--jobs N]`:
every combination of the config's list-valued keys, one run directory each under one sweep
directory, in N parallel processes.

A run that fails (diverges, runs out of memory, its process is killed) does not stop the others;
the end names it. `--resume DIR` finishes a sweep: finished runs are left as they are,
interrupted ones continue from their checkpoints, the others start. Each of N jobs gets
1/N of the CPUs this process may use as torch threads (unless engine.threads is set).
SIGTERM / SIGINT stop every running job after its round in progress, with a checkpoint.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import USER_ERRORS, DflError, Interrupted
from .run import add_common, expand_config, preflight, print_table, run_one


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run the cartesian product of a config's list-valued keys",
                       description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="TOML config with list-valued keys (axes); not needed with --resume")
    add_common(p)
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--resume", metavar="DIR",
                   help="finish the sweep in DIR: resume interrupted runs, start missing ones")
    return p


@dataclass(frozen=True)
class Task:
    """One run of a sweep to do: start it in ``path`` (emptied first), or resume it there."""

    name: str
    config: Any
    path: Path
    resume: bool


@dataclass
class Outcome:
    name: str
    summary: Optional[dict[str, Any]] = None
    error: str = ""
    user_error: bool = True
    signum: int = 0


def run(args: argparse.Namespace) -> int:
    from .. import sweep
    from ..rundir.write import prepare

    if args.jobs < 1:
        raise DflError(f"--jobs: must be >= 1, got {args.jobs}")
    if args.resume:
        return resume(args)
    raw, axes, variants, out = expand_config(args, "sweep")
    preflight([v.config for v in variants])  # every user error before the directory is touched
    prepare(out, overwrite=args.overwrite)
    sweep.write_index(out, args.config, axes, variants, raw)
    return execute(out, [Task(v.name, v.config, out / v.name, False) for v in variants], args.jobs, args.quiet)


def resume(args: argparse.Namespace) -> int:
    from .. import sweep
    from ..rundir.checkpoint import CHECKPOINT
    from ..rundir.read import read_summary

    if args.set or args.config or args.overwrite:
        raise DflError("--resume finishes the sweep as it was configured; "
                       "CONFIG, --set and --overwrite are not allowed with it")
    out = Path(args.resume)
    variants = sweep.load_index(out)
    tasks, done = [], []
    for v in variants:
        path = out / v.name
        if (path / "summary.json").is_file():
            done.append(Outcome(v.name, summary=read_summary(path)))
        else:
            tasks.append(Task(v.name, v.config, path, (path / CHECKPOINT).is_file()))
    preflight([t.config for t in tasks if not t.resume])  # a config this version refuses, before any work
    return execute(out, tasks, args.jobs, args.quiet, done=done)


def run_task(task: Task, *, quiet: bool, share: int = 1) -> dict[str, Any]:
    """Run (or resume) one task in this process; what `dfl run` / `dfl run --resume` do."""
    from ..config import from_dict, read_toml
    from ..rundir.checkpoint import load_checkpoint
    from ..rundir.write import prepare

    if task.resume:
        (task.path / "error.txt").unlink(missing_ok=True)  # an earlier attempt's
        state = load_checkpoint(task.path)
        cfg = from_dict(read_toml(task.path / "config.toml"), str(task.path / "config.toml"))
        return run_one(cfg, task.path, quiet=quiet, title=task.name, resume_state=state, share=share)
    prepare(task.path, overwrite=True)
    return run_one(task.config, task.path, quiet=quiet, title=task.name, share=share)


def _record_failure(task: Task, outcome: Outcome, detail: str = "") -> None:
    """error.txt in the run directory: the message (and the traceback of an unexpected error)."""
    try:
        task.path.mkdir(parents=True, exist_ok=True)
        (task.path / "error.txt").write_text(outcome.error + "\n" + (detail and "\n" + detail))
    except OSError:
        pass


def execute(out: Path, tasks: list[Task], jobs: int, quiet: bool, done: Optional[list[Outcome]] = None) -> int:
    """Run the tasks (in this process, or in ``jobs`` processes), then print the table and the
    failures. Returns 0, or 2 (1 when a failure was not a user error) if some run failed.
    Trackers of the whole sweep ([logging]: MLflow's parent run) are open around it."""
    from .. import tracking

    with tracking.sweep(out, [t.config for t in tasks]) as outcome:
        code = _execute(out, tasks, jobs, quiet, done)
        outcome["failed"] = code != 0
        return code


def _execute(out: Path, tasks: list[Task], jobs: int, quiet: bool, done: Optional[list[Outcome]] = None) -> int:
    outcomes = list(done or [])
    if jobs == 1:
        for task in tasks:
            try:
                outcomes.append(Outcome(task.name, summary=run_task(task, quiet=quiet)))
            except Interrupted as exc:
                finished = sum(o.summary is not None for o in outcomes)
                raise Interrupted(f"{exc}; the sweep ({finished} of {len(tasks) + len(done or [])} runs finished) "
                                  f"continues with: dfl sweep --resume {out}", exc.signum) from None
            except USER_ERRORS as exc:
                outcomes.append(Outcome(task.name, error=str(exc)))
                _record_failure(task, outcomes[-1])
            except Exception as exc:  # noqa: BLE001 - one run's bug or OOM must not stop the others
                outcomes.append(Outcome(task.name, error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                                        user_error=False))
                _record_failure(task, outcomes[-1], traceback.format_exc())
    else:
        outcomes += _in_processes(out, tasks, jobs, len(outcomes))
    outcomes.sort(key=lambda o: o.name)  # the variants' order: names start with their index
    ok = [o.summary for o in outcomes if o.summary is not None]
    if ok:
        print_table(ok)
    failed = [o for o in outcomes if o.summary is None]
    print(f"sweep of {len(outcomes)} runs in {out}" + (f": {len(failed)} failed" if failed else ""))
    if not failed:
        return 0
    reasons = "; ".join(f"{o.name}: {o.error}" for o in failed)
    print(f"dfl: error: {len(failed)} of {len(outcomes)} runs failed ({reasons}); the others are done; "
          f"fix the cause and finish with: dfl sweep --resume {out}", file=sys.stderr)
    return 2 if all(o.user_error for o in failed) else 1


# ---------------------------------------------------------------------------- jobs in processes


def _die_with_parent() -> None:
    """Linux: get SIGTERM (checkpoint, then stop) when the sweep's process dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _job(conn: Any, task: Task, share: int) -> None:
    """A job's process: its own process group (signals come from the sweep, once), one task."""
    os.setpgrp()
    _die_with_parent()
    try:
        conn.send(Outcome(task.name, summary=run_task(task, quiet=True, share=share)))
    except Interrupted as exc:
        conn.send(Outcome(task.name, error=str(exc), signum=exc.signum))
    except USER_ERRORS as exc:
        outcome = Outcome(task.name, error=str(exc))
        _record_failure(task, outcome)
        conn.send(outcome)
    except BaseException as exc:  # noqa: BLE001 - reported to the sweep, which goes on
        outcome = Outcome(task.name, error=f"{type(exc).__name__}: {exc}".splitlines()[0], user_error=False)
        _record_failure(task, outcome, traceback.format_exc())
        conn.send(outcome)


def _in_processes(out: Path, tasks: list[Task], jobs: int, already: int) -> list[Outcome]:
    """Run the tasks in at most ``jobs`` spawned processes at a time; forward SIGTERM / SIGINT."""
    from multiprocessing import get_context
    from multiprocessing.connection import wait

    from ..stopping import StopOnSignal, signal_name

    ctx = get_context("spawn")
    pending, running, outcomes = list(tasks), {}, []
    forwarded: set[int] = set()

    def forward(signum: int) -> None:
        for proc, _, _ in running.values():
            if proc.is_alive():
                os.kill(proc.pid, signum)

    def at_once(signum: int) -> str:
        forward(signum)
        return f"stopped by {signal_name(signum)}; continue with: dfl sweep --resume {out}"

    with StopOnSignal(at_once) as stop:
        while running or (pending and not stop.requested):
            while pending and len(running) < jobs and not stop.requested:
                task = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_job, args=(send, task, min(jobs, len(tasks))),
                                   name=f"dfl-sweep-{task.name}")
                proc.start()
                send.close()
                running[proc.sentinel] = (proc, recv, task)
            if stop.requested and stop.signum not in forwarded:
                forwarded.add(stop.signum)
                forward(stop.signum)
            for sentinel in wait(list(running), timeout=0.5):
                proc, recv, task = running.pop(sentinel)
                outcome = None
                try:
                    if recv.poll():
                        outcome = recv.recv()
                except (EOFError, OSError):
                    pass
                proc.join()
                if outcome is None:  # killed (OOM killer, kill -9): its last checkpoint stays
                    code = proc.exitcode or 0
                    why = f"killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"
                    outcome = Outcome(task.name, error=f"its process {why}", user_error=False)
                    _record_failure(task, outcome)
                outcomes.append(outcome)
    if stop.requested:
        finished = already + sum(o.summary is not None for o in outcomes)
        raise Interrupted(f"stopped by {signal_name(stop.signum)}: {finished} of {already + len(tasks)} runs "
                          f"finished, the running ones checkpointed; continue with: dfl sweep --resume {out}",
                          stop.signum)
    return outcomes
