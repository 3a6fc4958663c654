"""The names of all graph families, and `build` / `build_sequence` with their validation.

>>> "ring" in names() and is_time_varying("random_matching")
True
>>> build("ring", 2)
Traceback (most recent call last):
...
topologies.errors.TopologyError: ring needs n >= 3, got n=2
"""
from __future__ import annotations

from typing import Any

import networkx as nx

from . import random_neighbors, timevarying  # noqa: F401  (importing registers the time-varying families)
from .errors import TopologyError, check_params, unknown_name
from .generators import GRAPHS, check_connected
from .timevarying import GraphSequence, constant_sequence


def names(time_varying: bool | None = None) -> list[str]:
    """Registered graph names, sorted (only static ones / time-varying ones if asked)."""
    return sorted(k for k, s in GRAPHS.items() if time_varying is None or s.time_varying == time_varying)


def is_time_varying(name: str) -> bool:
    """True if the graph `name` changes from round to round."""
    return GRAPHS[_check_name(name)].time_varying


def _check_name(name: str) -> str:
    if name not in GRAPHS:
        raise TopologyError(unknown_name("topology", name, GRAPHS))
    return name


def _check_n(name: str, n: Any) -> int:
    low = GRAPHS[name].min_n
    if isinstance(n, bool) or not isinstance(n, int):
        raise TopologyError(f"{name}: n must be an integer >= {low}, got {n!r}")
    if n < low:
        raise TopologyError(f"{name} needs n >= {low}, got n={n}")
    return n


def _check_params(name: str, params: dict[str, Any]) -> None:
    check_params(name, params, GRAPHS[name].param_names())


def build(name: str, n: int, seed: int = 0, *, allow_disconnected: bool = False,
          **params: Any) -> nx.Graph:
    """The graph `name` on nodes 0..n-1.

    Args:
        name: one of `names()`; a time-varying name gives its round-0 graph (not checked for
            connectivity: single rounds of those are matchings).
        n: number of nodes.
        seed: seed of the random families (same seed, same graph).
        allow_disconnected: return a disconnected graph instead of raising.
        **params: family parameters (p, k, d, rows, cols, path; see `names()` summaries).

    Raises:
        TopologyError: unknown name, n too small, bad or unknown param, disconnected graph.
    """
    spec = GRAPHS[_check_name(name)]
    _check_n(name, n)
    _check_params(name, params)
    if spec.time_varying:
        return spec.fn(n, seed, **params).graph(0)
    G = spec.fn(n, seed, **params)
    if not allow_disconnected:
        check_connected(G)
    return G


def build_sequence(name: str, n: int, seed: int = 0, **params: Any) -> GraphSequence:
    """The graph sequence of `name`: `.graph(t)` is the graph of round t.

    Time-varying families are returned as they are; a static graph becomes the constant
    sequence of `build(name, n, seed, **params)`, so the engine can treat all names alike.
    """
    spec = GRAPHS[_check_name(name)]
    if not spec.time_varying:
        return constant_sequence(build(name, n, seed, **params))
    _check_n(name, n)
    params.pop("allow_disconnected", None)  # single rounds are matchings by design
    _check_params(name, params)
    return spec.fn(n, seed, **params)


sequence_for = build_sequence
"""Alias of `build_sequence` (a sequence for any name, constant for static graphs)."""
