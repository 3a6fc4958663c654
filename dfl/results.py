"""The run directory: config.toml, metrics.jsonl, summary.json, manifest.json, checkpoints/.

Written from outside the training loop (a Simulation callback). metrics.jsonl lines are written
whole and flushed, checkpoints atomically (temp file + rename), so a killed run leaves a
directory that `dfl run --resume DIR` continues from.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__
from .config import Config, dumps_toml, to_dict
from .errors import DflError

CHECKPOINT = "checkpoint.pt"


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
    """Writes one run's directory; the Simulation's on_round callback."""

    def __init__(self, path: Path, cfg: Config, *, label: str = "", resume: bool = False):
        self.path = Path(path)
        self.cfg = cfg
        self.label = label or cfg.label()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        if not resume:
            (self.path / "config.toml").write_text(dumps_toml(to_dict(cfg)))
            (self.path / "metrics.jsonl").write_text("")

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """On resume: metrics.jsonl holds exactly the checkpoint's history (drops later lines)."""
        text = "".join(json.dumps(r, default=_jsonable) + "\n" for r in history)
        _atomic_write(self.path / "metrics.jsonl", lambda fh: fh.write(text.encode()))

    def __call__(self, sim: Any, row: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        every = self.cfg.metrics.checkpoint_every
        if (every and sim.round % every == 0) or sim.round == self.cfg.rounds:
            self.checkpoint(sim)

    def checkpoint(self, sim: Any) -> None:
        _atomic_write(self.path / CHECKPOINT, lambda fh: torch.save(sim.state_dict(), fh))

    def finish(self, sim: Any, extra_manifest: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        hist = sim.history
        best = max(hist, key=lambda r: r["test_acc"]) if hist else {}
        summary = {"label": self.label, "rounds": sim.round, "final": hist[-1] if hist else {},
                   "best": {"test_acc": best.get("test_acc"), "round": best.get("round")}}
        write_json(self.path / "summary.json", summary)
        manifest = {
            "dfl_version": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "device": str(sim.device), "seed": self.cfg.seed,
            "backend": self.cfg.engine.backend, "num_params": sim.layout.size,
            "num_clients": int(sim.bank.shape[0]), "peak_memory_mb": peak_memory_mb(),
            "started": self.started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra_manifest or {}),
        }
        if sim.device.type == "cuda":
            manifest["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(sim.device) / 2**20
        write_json(self.path / "manifest.json", manifest)
        return summary


STATE_KEYS = ("round", "bank", "trainer", "algorithm", "comm_mb", "elapsed", "history")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a run directory's checkpoint; a corrupt one is reported, not loaded."""
    file = Path(path) / CHECKPOINT
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DflError(f"{file}: corrupt checkpoint ({type(exc).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise DflError(f"{file}: not a dfl run checkpoint (expected the keys {', '.join(STATE_KEYS)}); "
                       "delete it to start over")
    return state


def check_state(state: dict[str, Any], sim: Any, path: Path) -> None:
    """A checkpoint must fit the run's Simulation (same clients and model) and not be past its end."""
    bank = state["bank"]
    want = (len(sim.steps), sim.layout.size)
    if not isinstance(bank, torch.Tensor) or tuple(bank.shape) != want:
        got = tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
        raise DflError(f"{Path(path) / CHECKPOINT}: parameter bank {got} does not fit the config's "
                       f"{want} (clients x parameters); was config.toml edited?")
    if not 0 <= int(state["round"]) <= sim.cfg.rounds:
        raise DflError(f"{Path(path) / CHECKPOINT}: round {state['round']} is outside 0..{sim.cfg.rounds}")
