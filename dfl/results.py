"""The run directory: config.toml, metrics.jsonl, summary.json, manifest.json, checkpoint.pt.

Written from outside the training loop, from the values it is given (rows, the state to
checkpoint, the run's facts; ``RunDir``). metrics.jsonl lines are written
whole and flushed, checkpoints atomically (temp file + rename), so a killed run leaves a
directory that `dfl run --resume DIR` continues from. By default a checkpoint is written after
the first round, then every ``metrics.checkpoint_minutes`` of wall time, and at the end
(``metrics.checkpoint_every = N``: every N rounds instead).

Checkpoints hold tensors and plain values only (dicts, lists, numbers, strings) and are read
with ``torch.load(weights_only=True)`` (``safe_load``): a file carrying any other object, which
unpickling would construct by running code, is refused with one line, never executed.
"""
from __future__ import annotations

import json
import os
import pickle
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from . import __version__
from .config import Config, dumps_toml, to_dict
from .errors import DflError

CHECKPOINT = "checkpoint.pt"
#: The wall clock of the checkpoint cadence (a name of its own, so that tests can move it).
clock = time.monotonic


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plain(obj: Any) -> Any:
    """``obj`` with numpy values turned into Python numbers and tensors, so that
    ``torch.load(weights_only=True)`` reads it back (containers, tensors, numbers, strings, None)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def safe_save(obj: Any, path: Path) -> None:
    """torch.save of ``plain(obj)``, atomically (temp file + rename)."""
    _atomic_write(Path(path), lambda fh: torch.save(plain(obj), fh))


def safe_load(source: Any, name: str | Path, *, what: str = "file", map_location: Any = "cpu",
              hint: str = "") -> Any:
    """torch.load with weights_only=True: tensors and plain values only.

    Args:
        source: a path or a binary file object.
        name: how the message names the file; what: what the file should be ("checkpoint").
        hint: what the user can do, appended to the message of a corrupt file.
    Raises:
        DflError: one line; "refused" for a file carrying other objects (unpickling them could
        run code: they are never constructed), "corrupt" for one that cannot be read at all.
    """
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise DflError(f"{name}: corrupt {what} ({exc}){hint}") from None
        culprit = re.search(r"GLOBAL ([\w.]+)", str(exc))
        found = f" ({culprit.group(1)})" if culprit else ""
        raise DflError(f"{name}: {what} refused: it holds an object other than tensors and plain "
                       f"values{found}, which loading would construct by running code; use a {what} "
                       "written by dfl") from None
    except Exception as exc:  # noqa: BLE001 - a truncated zip, garbage, an empty file
        raise DflError(f"{name}: corrupt {what} ({type(exc).__name__}){hint}") from None


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2, default=_jsonable) + "\n").encode()))


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (MB); on CUDA also the peak allocated memory."""
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
        _atomic_write(self.path / "metrics.jsonl", lambda fh: fh.write(text.encode()))

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
        peak memory, the run's ``facts``: device, sizes, engine, runtime); returns the summary."""
        best = max(history, key=lambda r: r["test_acc"]) if history else {}
        summary = {"label": self.label, "rounds": rounds, "final": history[-1] if history else {},
                   "best": {"test_acc": best.get("test_acc"), "round": best.get("round")}}
        write_json(self.path / "summary.json", summary)
        manifest = {
            "dfl_version": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "seed": self.cfg.seed, "backend": self.cfg.engine.backend,
            "peak_memory_mb": peak_memory_mb(), "torch_threads": torch.get_num_threads(),
            "started": self.started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts,
        }
        if str(facts.get("device", "")).startswith("cuda"):
            manifest["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(facts["device"]) / 2**20
        write_json(self.path / "manifest.json", manifest)
        return summary


def read_summary(path: Path) -> dict[str, Any]:
    """summary.json of a finished run directory."""
    file = Path(path) / "summary.json"
    try:
        summary = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DflError(f"{file}: cannot read the run's summary ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("final"), dict):
        raise DflError(f"{file}: not a dfl run summary (no 'final' metrics)")
    return summary


STATE_KEYS = ("round", "bank", "engine", "algorithm", "comm_mb", "elapsed", "history")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a run directory's checkpoint (weights_only); a corrupt or foreign one is reported, not loaded."""
    file = Path(path) / CHECKPOINT
    state = safe_load(file, file, what="checkpoint", hint="; delete it to start over")
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise DflError(f"{file}: not a dfl run checkpoint (expected the keys {', '.join(STATE_KEYS)}); "
                       "delete it to start over")
    return state


def check_state(state: dict[str, Any], want: tuple[int, int], rounds: int, path: Path) -> None:
    """A checkpoint must fit the run (``want``: its clients x parameters) and not be past its
    end (``rounds``)."""
    bank = state["bank"]
    if not isinstance(bank, torch.Tensor) or tuple(bank.shape) != want:
        got = tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
        raise DflError(f"{Path(path) / CHECKPOINT}: parameter bank {got} does not fit the config's "
                       f"{want} (clients x parameters); was config.toml edited?")
    if not 0 <= int(state["round"]) <= rounds:
        raise DflError(f"{Path(path) / CHECKPOINT}: round {state['round']} is outside 0..{rounds}")
