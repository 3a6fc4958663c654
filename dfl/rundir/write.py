"""Writes a run directory: config.toml, metrics.jsonl, summary.json, manifest.json, checkpoint.pt.

Written from outside the training loop, from the values it is given (rows, the state to
checkpoint, the run's facts; ``RunDir``). metrics.jsonl lines are written whole and flushed,
checkpoints and JSON files atomically (dfl.files.atomic_write), so a killed run leaves a
directory that `dfl run --resume DIR` continues from. By default a checkpoint is written after
the first round, then every ``metrics.checkpoint_minutes`` of wall time, and at the end
(``metrics.checkpoint_every = N``: every N rounds instead). manifest.json records the method's
facts (dfl.methods.MethodFacts) so that readers name the run without the registries.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .. import __version__, methods
from ..config import Config, dumps_toml, to_dict
from ..errors import DflError
from ..files import atomic_write
from .checkpoint import CHECKPOINT, safe_save

#: The wall clock of the checkpoint cadence (a name of its own, so that tests can move it).
clock = time.monotonic


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, atomically (numpy and torch scalars as numbers, others as strings)."""
    atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2, default=_jsonable) + "\n").encode()))


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (MB); RunDir.finish adds CUDA's peak allocated memory."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux
    return float(rss)


def check_out(out: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """The checks of `prepare` that touch nothing: a file in the way, a non-empty directory
    without --overwrite, a --resume directory without a checkpoint."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DflError(f"--out {path}: exists and is not a directory")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise DflError(f"--out {path}: cannot write there ({parent} is a file)")
    if resume:
        if not (path / CHECKPOINT).is_file():
            raise DflError(f"--resume {path}: no {CHECKPOINT} there; was it written by `dfl run`?")
    elif path.exists() and any(path.iterdir()) and not overwrite:
        raise DflError(f"--out {path}: directory exists and is not empty; "
                       "pass --overwrite to replace it or --resume to continue it")
    return path


def prepare(out: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Check that the run directory can be (re)used and written, before any work is done;
    with --overwrite, empty it."""
    path = check_out(out, overwrite=overwrite, resume=resume)
    if resume:
        return path
    if path.exists() and any(path.iterdir()):
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DflError(f"--out {path}: cannot write there ({exc.strerror})") from None
    return path


class RunDir:
    """Writes one run's directory from the values it is given: rows (``append``), checkpoints
    (``after_round`` after every round, evaluated or not, so that checkpoints fall on rounds
    without evaluation as well) and, at the end, summary.json and manifest.json (``finish``)."""

    def __init__(self, path: Path, cfg: Config, *, label: str = "", resume: bool = False):
        self.path = Path(path)
        self.cfg = cfg
        self.label = label or cfg.label()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.saved_round: Optional[int] = None  # the round of the checkpoint on disk (None: none yet)
        self.saved_at = clock()
        if not resume:
            (self.path / "config.toml").write_text(dumps_toml(to_dict(cfg)))
            (self.path / "metrics.jsonl").write_text("")

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """On resume: metrics.jsonl holds exactly the checkpoint's history (drops later lines)."""
        text = "".join(json.dumps(r, default=_jsonable) + "\n" for r in history)
        atomic_write(self.path / "metrics.jsonl", lambda fh: fh.write(text.encode()))

    def append(self, row: dict[str, Any]) -> None:
        """One metrics row, written whole and flushed to disk."""
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def due(self, round_: int) -> bool:
        """A checkpoint is due after ``round_`` rounds: at the end; every checkpoint_every rounds if
        set; else after the first round (so that a killed run can always be resumed) and every
        checkpoint_minutes."""
        m = self.cfg.metrics
        if round_ == self.cfg.rounds:
            return True
        if m.checkpoint_every:
            return round_ % m.checkpoint_every == 0
        return self.saved_round is None or clock() - self.saved_at >= 60.0 * m.checkpoint_minutes

    def after_round(self, round_: int, state: Callable[[], dict[str, Any]]) -> None:
        """Checkpoint ``state()`` (built only then) if one is due after ``round_`` rounds."""
        if self.saved_round != round_ and self.due(round_):
            self.checkpoint(round_, state())

    def checkpoint(self, round_: int, state: dict[str, Any]) -> None:
        """Write the run's state after ``round_`` rounds (a Simulation's state_dict)."""
        safe_save(state, self.path / CHECKPOINT)
        self.saved_round, self.saved_at = round_, clock()

    def finish(self, history: list[dict[str, Any]], rounds: int, facts: dict[str, Any]) -> dict[str, Any]:
        """summary.json (final and best rows of ``history``) and manifest.json (versions, platform,
        peak memory, the method's facts, the run's ``facts``: device, sizes, engine, runtime);
        returns the summary."""
        best = max(history, key=lambda r: r["test_acc"]) if history else {}
        summary = {"label": self.label, "rounds": rounds, "final": history[-1] if history else {},
                   "best": {"test_acc": best.get("test_acc"), "round": best.get("round")}}
        write_json(self.path / "summary.json", summary)
        manifest = {
            "dfl_version": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "seed": self.cfg.seed, "backend": self.cfg.engine.backend,
            "peak_memory_mb": peak_memory_mb(), "torch_threads": torch.get_num_threads(),
            "started": self.started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "method": methods.describe(self.cfg.algorithm.name, self.cfg.local.optimizer).to_json(), **facts,
        }
        if str(facts.get("device", "")).startswith("cuda"):
            manifest["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(facts["device"]) / 2**20
        write_json(self.path / "manifest.json", manifest)
        return summary
