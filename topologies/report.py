"""`describe`: the figures of a topology that a run reports and `dfl topo` prints.

>>> d = describe("ring", 8)
>>> d["edges"], d["degree_min"], d["diameter"], d["messages_per_round"]
(8, 2, 4, 16)
"""
from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np

from .catalog import build, build_sequence, is_time_varying
from .mixing import mixing_matrix, mixing_matrix_sparse
from .spectra import (DENSE_MAX, consensus_contraction, contraction_factor, effective_gap,
                      mixing_time, spectral_gap)

DIAMETER_MAX_N = 2000
"""Diameter is not computed (None) above this n."""
EPS = 1e-3
"""Consensus-error reduction that `mixing_time` counts steps for."""


def _diameter(G: nx.Graph) -> int | None:
    n = G.number_of_nodes()
    if n > DIAMETER_MAX_N or not nx.is_connected(G):
        return None
    return int(nx.diameter(G, usebounds=n > 2))


def period_gap(seq, rule: str = "metropolis", q: int = 1) -> float | None:
    """1 - ||prod_t W_t^q - J/n||_2 over one period of a periodic sequence (None: no period, or n
    above DENSE_MAX). A single round of a time-varying graph (one matching) has gap 0; this is the
    contraction of the consensus error over the rounds that make one period."""
    if not seq.period or seq.n > DENSE_MAX:
        return None
    P = np.eye(seq.n)
    for t in range(seq.period):
        P = np.linalg.matrix_power(seq.mixing(t, rule), q) @ P
    dev = np.linalg.norm(P - np.full_like(P, 1.0 / seq.n), 2)
    return float(min(1.0, max(0.0, 1.0 - dev)))


def describe(name: str, n: int, rule: str = "metropolis", q: int = 1, seed: int = 0,
             **params: Any) -> dict[str, Any]:
    """Figures of `build(name, n, seed, **params)` mixed with `rule`, Q = q gossip steps.

    Returns a dict with: name, nodes, edges, degree_min, degree_max, diameter (None above
    DIAMETER_MAX_N nodes or if disconnected), mixing, q, spectral_gap, effective_gap
    (1 - (1 - gap)^q), contraction_per_round ((1 - gap)^q on ||X - X_bar||),
    consensus_contraction ((1 - gap)^(2q) on Xi), mixing_time (gossip steps to shrink the
    consensus error by EPS), mixing_rounds (= ceil(mixing_time / q)), messages_per_round
    (2 * edges * q: every edge carries a model both ways per gossip step), time_varying,
    period and period_gap (time-varying only: the gap of the product over one period), note.
    Time-varying graphs are described at round 0 (the note says so).
    """
    tv = is_time_varying(name)
    if tv:
        seq = build_sequence(name, n, seed, **params)
        G = seq.graph(0)
    else:
        G = build(name, n, seed, **params)
    W = mixing_matrix(G, rule) if n <= DENSE_MAX else mixing_matrix_sparse(G, rule)
    gap = spectral_gap(W)
    degrees = [d for _, d in G.degree()]
    steps = mixing_time(gap, EPS)
    out = {
        "name": name, "nodes": G.number_of_nodes(), "edges": G.number_of_edges(),
        "degree_min": min(degrees), "degree_max": max(degrees), "diameter": _diameter(G),
        "mixing": rule, "q": q, "spectral_gap": gap, "effective_gap": effective_gap(gap, q),
        "contraction_per_round": contraction_factor(gap, q),
        "consensus_contraction": consensus_contraction(gap, q),
        "mixing_time": steps, "mixing_rounds": steps if math.isinf(steps) else math.ceil(steps / q),
        "messages_per_round": 2 * G.number_of_edges() * q,
        "time_varying": tv, "period": None, "period_gap": None, "note": None,
    }
    if tv:
        out.update(period=seq.period, period_gap=period_gap(seq, rule, q),
                   note=f"time-varying: round 0 shown (period {seq.period or 'none: random'})")
    return out
