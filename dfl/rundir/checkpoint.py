"""checkpoint.pt: a run's state after a round, saved atomically and read back safely.

Checkpoints hold tensors and plain values only (dicts, lists, numbers, strings) and are read
with ``torch.load(weights_only=True)`` (``safe_load``): a file carrying any other object, which
unpickling would construct by running code, is refused with one line, never executed.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DflError
from ..files import atomic_write

CHECKPOINT = "checkpoint.pt"
#: What a checkpoint holds (a Simulation's state_dict).
STATE_KEYS = ("round", "bank", "engine", "algorithm", "comm_mb", "elapsed", "history")


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
    atomic_write(Path(path), lambda fh: torch.save(plain(obj), fh))


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
