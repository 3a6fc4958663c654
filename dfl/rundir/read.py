"""Reads run and sweep directories back (dfl.rundir.write writes them); imports no torch.

A run directory holds config.toml, metrics.jsonl (one JSON object per evaluated round),
summary.json and manifest.json. A sweep directory holds sweep.json and one run directory per
run. Plots and reports work on `Run` objects and on their groups (dfl.rundir.groups).

    runs = load_runs(["runs/sweep1", "runs/quickstart"])
    runs[0].label, runs[0].metrics["test_acc"], runs[0].facts.centralized

A run's method (its label, whether it is centralized, its optimizer's hyperparameters) is read
from manifest.json, where `dfl run` records it; only for a run directory written without it (an
older version, a run still in progress) are the registries asked (dfl.methods), which imports
torch. Every problem with the files is a DflError naming the file (and line), never a traceback.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from .. import methods
from ..config import Config, from_dict, read_toml
from ..errors import ConfigError, DflError
from ..methods import MethodFacts

_DEFAULTS = Config()
_HINT = "is it a run or sweep directory written by `dfl run`/`dfl sweep`?"


@dataclass
class Run:
    """One run directory, read back.

    `config` is the raw nested dict of config.toml; `metrics` maps each key seen in
    metrics.jsonl to a float array with one entry per evaluated round (NaN where a row lacks
    the key or holds null, e.g. sharpness measured every k rounds); `facts` says what its
    method is (label, centralized, variant, the optimizer's hyperparameters).
    """

    path: Path
    config: dict[str, Any]
    label: str
    metrics: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def _get(self, section: str, key: str) -> Any:
        value = self.config.get(section, {}).get(key)
        return getattr(getattr(_DEFAULTS, section), key) if value is None else value

    @property
    def algorithm(self) -> str:
        return str(self._get("algorithm", "name"))

    @cached_property
    def facts(self) -> MethodFacts:
        """The method's facts as manifest.json records them; for a run written without them, the
        registries' answers (dfl.methods.describe, which imports torch)."""
        if self.manifest.get("method") is not None:
            return MethodFacts.from_json(self.manifest["method"], str(self.path / "manifest.json"))
        return methods.describe(self.algorithm, str(self._get("local", "optimizer") or ""))

    @property
    def method(self) -> str:
        """The algorithm, with the local optimizer when it is a variant: "dfedsam+tram" (colours)."""
        facts = self.facts
        return f"{self.algorithm}+{facts.optimizer}" if facts.variant else self.algorithm

    @property
    def topology(self) -> str:
        """The graph's name, or "server" for the centralized baselines."""
        return "server" if self.facts.centralized else str(self._get("topology", "name"))

    @property
    def gossip_steps(self) -> int:
        return int(self._get("algorithm", "gossip_steps"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", _DEFAULTS.seed))

    @property
    def rounds(self) -> int:
        return len(self.metrics.get("round", ()))

    def has(self, key: str) -> bool:
        """True when the metric was recorded in at least one row with a finite value."""
        col = self.metrics.get(key)
        return col is not None and bool(np.isfinite(col).any())

    def final(self, key: str) -> float:
        """The last finite value of a metric (NaN if none)."""
        col = self.metrics.get(key)
        if col is None:
            return math.nan
        finite = col[np.isfinite(col)]
        return float(finite[-1]) if finite.size else math.nan


# ---------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DflError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DflError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.jsonl -> {key: float array}; a bad line is a DflError with file and line number.

    A last line without its newline that does not parse is ignored: a run still being
    written. Values that are null or not numbers become NaN.
    """
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DflError(f"{path}: not a text file ({exc})") from None
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # partial last line of a run in progress
                break
            raise DflError(f"{path}:{i}: not a JSON object ({exc.msg}): {line[:60]!r}") from None
        if not isinstance(row, dict):
            raise DflError(f"{path}:{i}: expected a JSON object, got {line[:60]!r}")
        if "round" not in row:
            raise DflError(f"{path}:{i}: row has no 'round' key")
        rows.append(row)
    if not rows:
        raise DflError(f"{path}: no metrics rows yet (empty file)")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: np.array([_num(row.get(k)) for row in rows], dtype=float) for k in keys}


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def run_label(config: dict[str, Any], summary: dict[str, Any]) -> str:
    """summary.json's label, else the one Config.label() builds ('DFedSAM, ring, Q=4')."""
    if isinstance(summary.get("label"), str) and summary["label"]:
        return summary["label"]
    try:
        return from_dict(config, "config.toml").label()
    except DflError:  # a config this version cannot read: name the algorithm at least
        algo = config.get("algorithm", {}).get("name", _DEFAULTS.algorithm.name)
        return str(config.get("name") or methods.method_label(str(algo)))


def load_run(path: str | Path) -> Run:
    """Read one run directory (config.toml, metrics.jsonl, summary.json, manifest.json)."""
    p = Path(path)
    if not p.exists():
        raise DflError(f"{p}: no such directory")
    if not p.is_dir():
        raise DflError(f"{p}: not a directory; {_HINT}")
    metrics_path = p / "metrics.jsonl"
    if not metrics_path.is_file():
        raise DflError(f"{p}: no metrics.jsonl; {_HINT}")
    try:
        config = read_toml(p / "config.toml") if (p / "config.toml").is_file() else {}
    except ConfigError as exc:
        raise DflError(str(exc)) from None
    summary = _read_json(p / "summary.json")
    return Run(path=p, config=config, label=run_label(config, summary), metrics=read_metrics(metrics_path),
               summary=summary, manifest=_read_json(p / "manifest.json"))


def read_sweep(path: str | Path) -> dict[str, Any]:
    """sweep.json of a sweep directory ({} when there is none)."""
    return _read_json(Path(path) / "sweep.json")


def _has_rows(run_dir: Path) -> bool:
    """metrics.jsonl exists and is not empty (`dfl run` creates it empty when a run starts)."""
    m = run_dir / "metrics.jsonl"
    return m.is_file() and m.stat().st_size > 0 and bool(m.read_text(errors="replace").strip())


def _run_dirs(p: Path, on_skip: Callable[[str], None]) -> list[Path]:
    """The run directories a user-given path stands for."""
    if not p.exists():
        raise DflError(f"{p}: no such directory")
    if (p / "metrics.jsonl").is_file() or not p.is_dir():
        return [p]
    sweep = read_sweep(p)
    if sweep:
        out = []
        for entry in sweep.get("runs", []):
            sub = p / str(entry.get("dir", "")) if isinstance(entry, dict) else p / str(entry)
            if _has_rows(sub):
                out.append(sub)
            else:
                on_skip(f"{sub}: listed in {p / 'sweep.json'} but has no metrics yet; skipped")
        if out:
            return out
        raise DflError(f"{p}: none of the sweep's runs has metrics yet")
    found = sorted(m.parent for m in p.rglob("metrics.jsonl"))
    if not found:
        raise DflError(f"{p}: no metrics.jsonl; {_HINT}")
    for d in [d for d in found if not _has_rows(d)]:
        on_skip(f"{d}: no metrics yet; skipped")
    if not any(_has_rows(d) for d in found):
        raise DflError(f"{p}: none of its runs has metrics yet")
    return [d for d in found if _has_rows(d)]


def load_runs(paths: Iterable[str | Path], on_skip: Optional[Callable[[str], None]] = None) -> list[Run]:
    """Read run directories, sweep directories (expanded) and directories holding run dirs.

    Args:
        paths: the directories, in the order runs should appear.
        on_skip: called with a message for each sweep member without metrics (still running);
            by default such members are skipped silently.
    Returns:
        the runs, each directory once.
    """
    seen: set[Path] = set()
    runs = []
    for path in paths:
        for d in _run_dirs(Path(path), on_skip or (lambda msg: None)):
            if d.resolve() not in seen:
                seen.add(d.resolve())
                runs.append(load_run(d))
    if not runs:
        raise DflError("no run directories given")
    return runs


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


def require(runs: Iterable[Run], keys: str | Iterable[str]) -> None:
    """Raise a DflError naming the runs that lack a metric a figure or table needs."""
    runs = list(runs)
    for key in [keys] if isinstance(keys, str) else keys:
        missing = [r for r in runs if not r.has(key)]
        if missing:
            names = ", ".join(f"{r.path} ({r.label})" for r in missing[:4])
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise DflError(f"metric {key!r} is missing from {len(missing)} of {len(runs)} runs: {names}{more}")
