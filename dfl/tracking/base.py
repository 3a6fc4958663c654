"""What the trackers share: the interface `Trackers` drives, the config and metrics rows as
trackers take them, one-line messages, and tracking.json (tracker run ids, for --resume)."""
from __future__ import annotations

import importlib
import json
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Optional, Protocol

from ..config import Config, to_dict
from ..errors import DflError
from ..rundir.groups import flat_keys

INSTALL = 'pip install "dfl[tracking]"'
STATE = "tracking.json"
"""Tracker run ids of a run (or sweep) directory, for --resume."""
FILES = ("config.toml", "metrics.jsonl", "summary.json", "manifest.json")
"""Files of the run directory that MLflow and W&B store with the run."""


class Tracker(Protocol):
    """One experiment tracker's run, as `Trackers` drives it: `start` before the first round,
    `log_row` after each evaluated round, `finish` after the run directory is complete (its files
    and figures), `close` instead of `finish` when the run fails or is stopped; `ids` is what
    tracking.json keeps for --resume."""

    def start(self) -> None: ...

    def log_row(self, row: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any], files: list[Path], figures: dict[str, Path]) -> None: ...

    def close(self, status: str) -> None: ...

    def ids(self) -> dict[str, Any]: ...


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as {dotted key: value}: {"seed": 0, "local.rho": 0.05, ...} (None values left out)."""
    return flat_keys(to_dict(cfg))


def row_numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, without "round" (the step)."""
    return {k: float(v) for k, v in row.items()
            if k != "round" and isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type if empty), at most 200 characters."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


def warn(message: str) -> None:
    """A warning on stderr, as the CLI prints them."""
    print(f"dfl: warning: {message}", file=sys.stderr)


def require_module(module: str, key: str, package: str) -> Any:
    """Import `module`; a one-line DflError naming the config key and the package to install if missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DflError(f"{key}: the {package} package is not installed; {INSTALL} "
                       f"(or pip install {package})") from None


def read_state(path: Path) -> dict[str, Any]:
    """The tracker run ids kept in <path>/tracking.json ({} when there are none)."""
    try:
        state = json.loads((Path(path) / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, **changes: Any) -> None:
    """Update <path>/tracking.json with `changes`."""
    state = {**read_state(path), **changes}
    (Path(path) / STATE).write_text(json.dumps(state, indent=2) + "\n")


def sweep_dir(out: Path) -> Optional[Path]:
    """The sweep directory a run directory belongs to (it holds sweep.json), else None."""
    parent = Path(out).resolve().parent
    return parent if (parent / "sweep.json").is_file() else None
