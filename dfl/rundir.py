"""Reading run and sweep directories back (the engine writes them, see dfl/results.py).

A run directory holds config.toml, metrics.jsonl (one JSON object per evaluated round),
summary.json and manifest.json. A sweep directory holds sweep.json and one run directory per
run. Plots and reports work on `Run` objects and on `Group`s: the runs that differ only by
their seed.

    runs = load_runs(["runs/sweep1", "runs/quickstart"])
    for g in group_runs(runs):
        x, mean, lo, hi = g.series("consensus")
    describe_variants(group_runs(runs)).labels   # {group key: "DFedSAM, Q=4"}: what differs

Every problem with the files is a DflError naming the file (and line), never a traceback.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from . import methods
from .config import Config, from_dict, read_toml
from .errors import ConfigError, DflError

_DEFAULTS = Config()
_HINT = "is it a run or sweep directory written by `dfl run`/`dfl sweep`?"


@dataclass
class Run:
    """One run directory, read back.

    `config` is the raw nested dict of config.toml; `metrics` maps each key seen in
    metrics.jsonl to a float array with one entry per evaluated round (NaN where a row lacks
    the key or holds null, e.g. sharpness measured every k rounds).
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

    @property
    def method(self) -> str:
        """The algorithm, with the local optimizer when it is a variant: "dfedsam+tram" (colours)."""
        opt = str(self._get("local", "optimizer") or "")
        return f"{self.algorithm}+{opt}" if methods.is_variant(opt) else self.algorithm

    @property
    def topology(self) -> str:
        """The graph's name, or "server" for the centralized baselines."""
        return "server" if methods.is_centralized(self.algorithm) else str(self._get("topology", "name"))

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


@dataclass
class Group:
    """Runs that differ only by their seed; curves are drawn as mean and min-max band."""

    key: str
    label: str
    runs: list[Run]

    @property
    def algorithm(self) -> str:
        return self.runs[0].algorithm

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def topology(self) -> str:
        return self.runs[0].topology

    @property
    def gossip_steps(self) -> int:
        return self.runs[0].gossip_steps

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def series(self, key: str, x: str = "round") -> tuple[np.ndarray, ...]:
        """(x, mean, min, max) of metric `key` over the seeds, at the rounds all seeds share.

        Rows where `key` (or `x`) is missing or not finite are dropped first. With one seed,
        mean == min == max == the recorded values.
        """
        per_run = []
        for run in self.runs:
            require([run], key if x == "round" else (key, x))
            rnd, xs, ys = run.metrics["round"], run.metrics[x], run.metrics[key]
            ok = np.isfinite(ys) & np.isfinite(xs) & np.isfinite(rnd)
            per_run.append({float(r): (float(a), float(b)) for r, a, b in zip(rnd[ok], xs[ok], ys[ok])})
        common = sorted(set.intersection(*(set(d) for d in per_run)))
        if not common:
            raise DflError(f"{self.label}: the seeds' runs have no evaluated round with {key!r} in common")
        xs = np.array([[d[r][0] for r in common] for d in per_run])
        ys = np.array([[d[r][1] for r in common] for d in per_run])
        return xs.mean(axis=0), ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)

    def finals(self, key: str) -> np.ndarray:
        """The last finite value of `key` for each seed (NaN where a run has none)."""
        return np.array([r.final(key) for r in self.runs])


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


def require(runs: Iterable[Run], keys: str | Iterable[str]) -> None:
    """Raise a DflError naming the runs that lack a metric a figure or table needs."""
    runs = list(runs)
    for key in [keys] if isinstance(keys, str) else keys:
        missing = [r for r in runs if not r.has(key)]
        if missing:
            names = ", ".join(f"{r.path} ({r.label})" for r in missing[:4])
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise DflError(f"metric {key!r} is missing from {len(missing)} of {len(runs)} runs: {names}{more}")


# ---------------------------------------------------------------------------- grouping


def flat_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted key: value}: {"local": {"lr": 0.1}} -> {"local.lr": 0.1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config with every key this version of dfl knows filled in (its default where the
    run predates the key), so runs written before a key existed group with runs written after;
    a config this version cannot read is compared as written."""
    from .config import from_dict, to_dict
    from .errors import ConfigError
    try:
        return to_dict(from_dict(config))
    except (ConfigError, TypeError, ValueError):
        return config


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Group runs whose configs are equal but for the seed (and [logging], the trackers, which change
    no number), in order of first appearance.

    Groups that would share a label get the config keys that tell them apart appended,
    e.g. 'DFedSAM, ring, Q=4 (local.lr=0.05)'.
    """
    groups: dict[str, Group] = {}
    for run in runs:
        flat = {k: v for k, v in flat_keys(_with_defaults(run.config)).items() if not k.startswith("logging.")}
        flat.pop("seed", None)
        key = json.dumps(flat, sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Group(key=key, label=run.label, runs=[])
        groups[key].runs.append(run)
    out = list(groups.values())
    by_label: dict[str, list[Group]] = {}
    for g in out:
        by_label.setdefault(g.label, []).append(g)
    for same in by_label.values():
        if len(same) > 1:
            flats = [json.loads(g.key) for g in same]
            keys = sorted({k for f in flats for k in f if any(f.get(k) != o.get(k) for o in flats)})
            for g, f in zip(same, flats):
                g.label += " (" + ", ".join(f"{k}={f.get(k)}" for k in keys) + ")"
    return out


# ---------------------------------------------------------------------------- what differs


#: Config keys that do not change what a run computes (where and how it ran, what it logged).
NOT_SETTINGS = ("engine.", "logging.", "metrics.checkpoint_every", "metrics.checkpoint_minutes")
#: Short names of config keys in labels: "Q=4", "ρ=0.05"; others show their last part ("lr=0.1").
SHORT_KEYS = {"algorithm.gossip_steps": "Q", "local.rho": "ρ", "local.local_steps": "K", "data.alpha": "α",
              "data.num_clients": "n", "algorithm.participation": "p", "local.local_epochs": "epochs"}
#: Keys whose value alone is the label token ("ring", "cnn", "dirichlet").
BARE_KEYS = ("topology.name", "data.name", "model.name", "data.partition", "name")
_FIRST = ("algorithm", "topology.name", "algorithm.gossip_steps")
_GRAPH_KEYS = ("topology.", "algorithm.gossip_steps")
_SAM_KEYS = ("local.rho", "local.eta", "local.alpha", "local.rho_min", "local.adaptive_bias", "local.lam",
             "local.tau", "local.saf_epochs", "local.ema_decay")


def _algo_token(flat: dict[str, Any]) -> str:
    """'DFedSAM', 'DFedASAM' (dfedsam + asam), 'Pooled (sgd)': the algorithm as Config.label names it."""
    algo = str(flat.get("algorithm.name", _DEFAULTS.algorithm.name))
    return methods.method_label(algo, str(flat.get("local.optimizer") or ""))


def _token(dim: str, flat: dict[str, Any], terse: bool = True) -> Optional[str]:
    """How one varying setting appears in a label (None: the run has no value for it). `terse`
    leaves out what does not apply: the graph of a server, SAM's radius for SGD."""
    if dim == "algorithm":
        return _algo_token(flat)
    if terse and methods.is_centralized(str(flat.get("algorithm.name"))) and dim.startswith(_GRAPH_KEYS):
        return None
    if terse and dim in _SAM_KEYS and flat.get("local.optimizer") in ("sgd", "", None):
        return None
    value = flat.get(dim)
    if value is None or value == "":
        return None
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if dim in BARE_KEYS else f"{SHORT_KEYS.get(dim, dim.rsplit('.', 1)[-1])}={text}"


@dataclass
class Variants:
    """What tells a set of groups apart, for labels, colours and captions.

    dims: the settings that vary between the groups, in label order ("algorithm" stands for
    algorithm.name with local.optimizer); settings that follow from earlier ones (the optimizer
    that comes with each algorithm, a zipped key) are left out.
    tokens: group key -> {dim: its token ("Q=4"), or None when the run has no value}.
    labels: group key -> short label made of the tokens ("DFedSAM, Q=4"), leaving out tokens that
    do not apply (a server's graph, SAM's radius for SGD) unless labels would clash; a single
    group, or groups told apart only by settings that are not labelled, keep their full labels.
    shared: the settings all groups have in common, as a phrase for a title or caption.
    """

    dims: list[str]
    tokens: dict[str, dict[str, Optional[str]]]
    labels: dict[str, str]
    shared: str

    def values(self, dim: str) -> list[Optional[str]]:
        """The distinct tokens of one dim, in order of first appearance."""
        return list(dict.fromkeys(t[dim] for t in self.tokens.values()))


def describe_variants(groups: Iterable[Group]) -> Variants:
    """The settings that vary between `groups` (seed excluded), short labels and shared settings."""
    groups = list(groups)
    flats = {g.key: json.loads(g.key) for g in groups}
    keys = list(dict.fromkeys(k for f in flats.values() for k in f))
    varying = [k for k in keys if not k.startswith(NOT_SETTINGS)
               and len({json.dumps(f.get(k), default=str) for f in flats.values()}) > 1]
    if {"algorithm.name", "local.optimizer"} & set(varying):
        varying = ["algorithm"] + [k for k in varying if k not in ("algorithm.name", "local.optimizer")]
    varying.sort(key=lambda k: _FIRST.index(k) if k in _FIRST else len(_FIRST))
    tokens = {key: {d: _token(d, f, terse=False) for d in varying} for key, f in flats.items()}
    dims: list[str] = []
    for d in varying:  # keep a setting unless the ones kept so far already determine it
        seen: dict[tuple, Optional[str]] = {}
        determined = bool(dims) and all(seen.setdefault(tuple(t[k] for k in dims), t[d]) == t[d]
                                        for t in tokens.values())
        if not determined and len({t[d] for t in tokens.values()}) > 1:
            dims.append(d)
    tokens = {key: {d: t[d] for d in dims} for key, t in tokens.items()}
    labels = {key: ", ".join(v for v in (_token(d, f) for d in dims) if v) for key, f in flats.items()}
    clash = [k for k in labels if list(labels.values()).count(labels[k]) > 1]
    for key in clash:  # e.g. FedAvg in a sweep over Q: say what differs after all
        labels[key] = ", ".join(v for v in tokens[key].values() if v)
    if len(groups) == 1 or len(set(labels.values())) < len(groups) or "" in labels.values():
        labels = {g.key: g.label for g in groups}
    return Variants(dims, tokens, labels, _shared(groups, flats, varying))


def _shared(groups: list[Group], flats: dict[str, dict[str, Any]], varying: list[str]) -> str:
    """'digits, 16 clients, dirichlet α=0.3, cnn, K=5, ring, Q=1; 3 seeds' (what is not varying)."""
    first = next(iter(flats.values()))
    f = {**{k: v for k, v in flat_keys(asdict(_DEFAULTS)).items() if v is not None}, **first}  # keys left unwritten
    parts = []
    if "algorithm" not in varying:
        parts.append(_algo_token(f))
    for d in ("data.name", "data.num_clients", "data.partition", "model.name", "local.local_steps",
              "topology.name", "algorithm.gossip_steps"):
        central = methods.is_centralized(str(f.get("algorithm.name")))
        if d in varying or f.get(d) is None or (d.startswith(_GRAPH_KEYS) and central):
            continue
        if d == "data.num_clients":
            parts.append(f"{f[d]} clients")
        elif d == "data.partition" and f[d] == "dirichlet" and "data.alpha" not in varying:
            parts.append(f"dirichlet α={f.get('data.alpha', _DEFAULTS.data.alpha):g}")
        else:
            parts.append(_token(d, f) or "")
    seeds = sorted({len(g.runs) for g in groups})
    n = f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    return ", ".join(p for p in parts if p) + f"; {n}" + (" (mean, band: min-max)" if seeds[-1] > 1 else "")
