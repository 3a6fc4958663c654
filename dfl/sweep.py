"""Sweeps: list-valued keys of a config expand into the cartesian product of runs.

    [algorithm]
    name = ["dfedsam", "dfedavg"]
    gossip_steps = [1, 2, 4, 8]
    seed = [0, 1, 2]            # top-level keys too

gives 2 x 4 x 3 runs. Each run goes into its own run directory under one sweep directory, with
sweep.json listing the axes and every run's overrides (the plots read it).

Keys named together in ``[sweep] zip`` vary together (one axis of the product, element by
element) instead of multiplying, e.g. to pair each algorithm with its optimizer::

    [sweep]
    zip = ["algorithm.name", "local.optimizer"]     # or a list of such groups
    [algorithm]
    name = ["dfedavg", "dfedsam", "dfedsam"]
    [local]
    optimizer = ["sgd", "sam", "tram"]              # 3 runs (times the other axes)
"""
from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .config import Config, from_dict, read_toml
from .errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: its directory name, the overrides it applies and its config."""

    name: str
    overrides: dict[str, Any]
    config: Config


def _lists(raw: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, list[Any]]]:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _lists(value, path + ".")
        elif isinstance(value, list):
            if not value:
                raise ConfigError(f"{path}: a sweep axis needs at least one value, got []")
            yield path, value


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for i, p in enumerate(parents):
        raw = raw.setdefault(p, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parents[:i + 1])!r} is not a section key")
    raw[leaf] = value


def _slug(overrides: dict[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", ",".join(parts)) or "run"


def _zip_groups(spec: Any, axes: dict[str, list[Any]]) -> list[list[str]]:
    """[sweep] zip: one group (a list of keys) or a list of groups; checked against the axes."""
    if spec == []:
        return []
    groups = [spec] if isinstance(spec, list) and all(isinstance(k, str) for k in spec) else spec
    if not isinstance(groups, list) or not all(isinstance(g, list) and g for g in groups):
        raise ConfigError(f"sweep.zip: must be a list of keys or a list of such lists, got {spec!r}")
    seen: set[str] = set()
    for group in groups:
        for key in group:
            if key not in axes or key in seen:
                why = "is named twice" if key in seen else "is not a list-valued key of the config"
                raise ConfigError(f"sweep.zip: {key!r} {why}")
            seen.add(key)
        lengths = {key: len(axes[key]) for key in group}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"sweep.zip: zipped keys need lists of one length, got {lengths}")
    return groups


def _factors(raw: dict[str, Any], axes: dict[str, list[Any]]) -> list[list[dict[str, Any]]]:
    """The product's factors: each a list of override dicts (one key, or a zipped group)."""
    sweep = raw.get("sweep", {})
    if not isinstance(sweep, dict) or set(sweep) - {"zip"}:
        raise ConfigError(f"sweep: the only key of [sweep] is zip, got {sweep!r}")
    groups = _zip_groups(sweep.get("zip", []), axes)
    zipped = {key: g for g in groups for key in g}
    factors, done = [], set()
    for key in axes:
        group = zipped.get(key, [key])
        if group[0] in done:
            continue
        done.add(group[0])
        factors.append([dict(zip(group, vals)) for vals in zip(*(axes[k] for k in group))])
    return factors


def expand(raw: dict[str, Any], source: str = "config") -> tuple[dict[str, list[Any]], list[Variant]]:
    """(axes, variants) of a raw config dict; a config without lists is one variant."""
    raw = dict(raw)
    axes = {k: v for k, v in _lists(raw) if not k.startswith("sweep.")}
    factors = _factors(raw, axes)
    raw.pop("sweep", None)
    variants = []
    for i, parts in enumerate(itertools.product(*factors)):
        overrides = {k: v for part in parts for k, v in part.items()}
        one = copy.deepcopy(raw)
        for k, v in overrides.items():
            _set(one, k, v)
        cfg = from_dict(one, source)
        name = f"{i:03d}-{_slug(overrides)}" if axes else "run"
        variants.append(Variant(name, overrides, cfg))
    return axes, variants


def read(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A (possibly list-valued) TOML config as a raw dict, with the --set overrides applied."""
    raw = read_toml(path)
    for k, v in (overrides or {}).items():
        _set(raw, k, v)
    return raw


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, list[Any]], list[Variant]]:
    """Read a (possibly list-valued) TOML config, apply --set overrides, expand it."""
    return expand(read(path, overrides), str(path))


def write_index(out: Path, source: str, axes: dict[str, list[Any]], variants: list[Variant],
                raw: dict[str, Any] | None = None) -> None:
    """sweep.json: the source config, the axes, every run's directory and overrides, and the
    config as read (``raw``: with the --set overrides, before expansion; `dfl sweep --resume`
    rebuilds the variants from it, whatever became of the source file)."""
    index = {"config": str(Path(source).resolve()), "axes": axes,
             "runs": [{"dir": v.name, "overrides": v.overrides, "label": v.config.label()} for v in variants]}
    if raw is not None:
        index["raw"] = raw
    (out / "sweep.json").write_text(json.dumps(index, indent=2, default=str) + "\n")


def load_index(out: Path) -> list[Variant]:
    """The variants of the sweep directory ``out``, from its sweep.json: each rebuilt from the
    stored config (``raw``), or else from its run directory's config.toml."""
    path = Path(out) / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"--resume {out}: no sweep.json there; was it written by `dfl sweep`?")
    try:
        index = json.loads(path.read_text())
        runs = [(str(r["dir"]), dict(r.get("overrides", {}))) for r in index["runs"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path}: not a sweep index (expected runs with a dir each)") from None
    built = {v.name: v for v in expand(index["raw"], str(path))[1]} if isinstance(index.get("raw"), dict) else {}
    variants = []
    for name, overrides in runs:
        if name in built:
            variants.append(built[name])
        elif (Path(out) / name / "config.toml").is_file():
            cfg_path = Path(out) / name / "config.toml"
            variants.append(Variant(name, overrides, from_dict(read_toml(cfg_path), str(cfg_path))))
        else:
            raise ConfigError(f"{path}: run {name!r} has no config.toml and sweep.json has no config to rebuild it")
    return variants
