"""The runs read back, grouped and told apart: `Group` (runs that differ only by their seed),
`group_runs`, and `describe_variants` (what varies between groups: short labels, the shared
settings for a title). Imports no torch: what a run's method is comes from its recorded facts
(Run.facts).

    groups = group_runs(load_runs(["runs/sweep1"]))
    x, mean, lo, hi = groups[0].series("consensus")
    describe_variants(groups).labels   # {group key: "DFedSAM, Q=4"}: what differs
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

import numpy as np

from ..config import Config, LocalConfig, from_dict, to_dict
from ..errors import ConfigError, DflError
from ..methods import MethodFacts
from .read import Run, require

_DEFAULTS = Config()


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
    def facts(self) -> MethodFacts:
        return self.runs[0].facts

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
#: The optimizer hyperparameters' flat config keys ("local.rho"; any other is "local.params.<name>").
_HYPER_KEYS = tuple(f"local.{name}" for name in LocalConfig.flat_params)


def _hyperparameter(dim: str) -> Optional[str]:
    """The optimizer hyperparameter a config key sets ("local.rho" -> "rho"), or None."""
    if dim.startswith("local.params."):
        return dim[len("local.params."):]
    return dim[len("local."):] if dim in _HYPER_KEYS else None


def _token(dim: str, flat: dict[str, Any], facts: MethodFacts, terse: bool = True) -> Optional[str]:
    """How one varying setting appears in a label (None: the run has no value for it). `terse`
    leaves out what does not apply: the graph of a server, a hyperparameter that the run's
    optimizer does not take (SAM's radius for SGD)."""
    if dim == "algorithm":
        return facts.label
    if terse and facts.centralized and dim.startswith(_GRAPH_KEYS):
        return None
    known = facts.hyperparameters
    if terse and known is not None and _hyperparameter(dim) not in (None, *known):
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
    facts = {g.key: g.facts for g in groups}
    keys = list(dict.fromkeys(k for f in flats.values() for k in f))
    varying = [k for k in keys if not k.startswith(NOT_SETTINGS)
               and len({json.dumps(f.get(k), default=str) for f in flats.values()}) > 1]
    if {"algorithm.name", "local.optimizer"} & set(varying):
        varying = ["algorithm"] + [k for k in varying if k not in ("algorithm.name", "local.optimizer")]
    varying.sort(key=lambda k: _FIRST.index(k) if k in _FIRST else len(_FIRST))
    tokens = {key: {d: _token(d, f, facts[key], terse=False) for d in varying} for key, f in flats.items()}
    dims: list[str] = []
    for d in varying:  # keep a setting unless the ones kept so far already determine it
        seen: dict[tuple, Optional[str]] = {}
        determined = bool(dims) and all(seen.setdefault(tuple(t[k] for k in dims), t[d]) == t[d]
                                        for t in tokens.values())
        if not determined and len({t[d] for t in tokens.values()}) > 1:
            dims.append(d)
    tokens = {key: {d: t[d] for d in dims} for key, t in tokens.items()}
    labels = {key: ", ".join(v for v in (_token(d, f, facts[key]) for d in dims) if v) for key, f in flats.items()}
    clash = [k for k in labels if list(labels.values()).count(labels[k]) > 1]
    for key in clash:  # e.g. FedAvg in a sweep over Q: say what differs after all
        labels[key] = ", ".join(v for v in tokens[key].values() if v)
    if len(groups) == 1 or len(set(labels.values())) < len(groups) or "" in labels.values():
        labels = {g.key: g.label for g in groups}
    return Variants(dims, tokens, labels, _shared(groups, flats, varying))


def _shared(groups: list[Group], flats: dict[str, dict[str, Any]], varying: list[str]) -> str:
    """'digits, 16 clients, dirichlet α=0.3, cnn, K=5, ring, Q=1; 3 seeds' (what is not varying)."""
    first = next(iter(flats.values()))
    facts = groups[0].facts
    f = {**{k: v for k, v in flat_keys(asdict(_DEFAULTS)).items() if v is not None}, **first}  # keys left unwritten
    parts = []
    if "algorithm" not in varying:
        parts.append(facts.label)
    for d in ("data.name", "data.num_clients", "data.partition", "model.name", "local.local_steps",
              "topology.name", "algorithm.gossip_steps"):
        if d in varying or f.get(d) is None or (d.startswith(_GRAPH_KEYS) and facts.centralized):
            continue
        if d == "data.num_clients":
            parts.append(f"{f[d]} clients")
        elif d == "data.partition" and f[d] == "dirichlet" and "data.alpha" not in varying:
            parts.append(f"dirichlet α={f.get('data.alpha', _DEFAULTS.data.alpha):g}")
        else:
            parts.append(_token(d, f, facts) or "")
    seeds = sorted({len(g.runs) for g in groups})
    n = f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    return ", ".join(p for p in parts if p) + f"; {n}" + (" (mean, band: min-max)" if seeds[-1] > 1 else "")
