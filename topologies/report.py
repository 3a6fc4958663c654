"""`describe`: the figures of a topology that a run reports and `dfl topo` prints.

>>> d = describe("ring", 8)
>>> d["edges"], d["degree_min"], d["diameter"], d["messages_per_round"]
(8, 2, 4, 16)
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import networkx as nx
import numpy as np

from .catalog import build, build_sequence, is_time_varying
from .mixing import effective_rule, mixing_matrix_auto
from .spectra import (DENSE_MAX, consensus_contraction, contraction_factor, effective_gap,
                      mixing_time, spectral_gap)

DIAMETER_MAX_N = 2000
"""Diameter is not computed (None) above this n."""
EPS = 1e-3
"""Consensus-error reduction that `mixing_time` counts steps for."""


def _diameter(G: nx.Graph) -> int | None:
    """Longest shortest path (directed paths on a DiGraph); None if not (strongly) connected."""
    n = G.number_of_nodes()
    if G.is_directed():
        if n > DIAMETER_MAX_N or not nx.is_strongly_connected(G):
            return None
        return int(nx.diameter(G))
    if n > DIAMETER_MAX_N or not nx.is_connected(G):
        return None
    return int(nx.diameter(G, usebounds=n > 2))


def period_gap(seq, rule: str = "metropolis", q: int = 1, **params: Any) -> float | None:
    """1 - ||prod_t W_t^q - J/n||_2 over one period of a periodic sequence, W_t mixed with `rule`
    and its `params` (None: no period, or n above DENSE_MAX). A single round of a time-varying
    graph (one matching) has gap 0; this is the contraction of the consensus error over the
    rounds that make one period.

    A random sequence with a closed-form mean-square factor alpha = E[Xi(W_t X)] / Xi(X)
    (random_neighbors, see topologies.random_neighbors) has no period: it reports the
    mean-square gap 1 - alpha^(q/2), for any n (exact for q = 1; with the round's W_t applied q
    times the true factor is slightly larger). Other random sequences (random_matching): None.
    """
    if not seq.period:
        alpha = getattr(seq, "mean_square_factor", None)
        return None if alpha is None else float(1.0 - alpha ** (q / 2))
    if seq.n > DENSE_MAX:
        return None
    P = np.eye(seq.n)
    for t in range(seq.period):
        P = np.linalg.matrix_power(seq.mixing(t, rule, **params), q) @ P
    dev = np.linalg.norm(P - np.full_like(P, 1.0 / seq.n), 2)
    return float(min(1.0, max(0.0, 1.0 - dev)))


def describe(name: str, n: int, rule: str = "metropolis", q: int = 1, seed: int = 0,
             mixing_params: Optional[Mapping[str, Any]] = None, **params: Any) -> dict[str, Any]:
    """Figures of `build(name, n, seed, **params)` mixed with `rule` (with `mixing_params`, e.g.
    laplacian's a), Q = q gossip steps.

    Returns a dict with: name, nodes, edges, degree_min, degree_max, diameter (None above
    DIAMETER_MAX_N nodes or if disconnected), directed, mixing (the rule applied: see
    `effective_rule`), q, spectral_gap, effective_gap
    (1 - (1 - gap)^q), contraction_per_round ((1 - gap)^q on ||X - X_bar||),
    consensus_contraction ((1 - gap)^(2q) on Xi), mixing_time (gossip steps to shrink the
    consensus error by EPS), mixing_rounds (= ceil(mixing_time / q)), messages_per_round
    (2 * edges * q: every edge carries a model both ways per gossip step), time_varying,
    period and period_gap (time-varying only: the gap of the product over one period, or the
    mean-square gap for random_neighbors; see `period_gap`), expected_gap (random_neighbors:
    the gap of E[W_t], 1 - |1/(k+1) - k/((k+1)(n-1))|; else None), mean_square_factor
    (random_neighbors: alpha = E[Xi(W_t X)] / Xi(X); else None), note.
    Time-varying graphs are described at round 0 (the note says so). A directed graph
    (random_neighbors; arc j -> i: i pulls x_j) counts arcs as edges, in-degrees as degrees
    (the models a node receives) and one message per arc; its diameter follows directed paths.
    """
    tv = is_time_varying(name)
    if tv:
        seq = build_sequence(name, n, seed, **params)
        G = seq.graph(0)
    else:
        G = build(name, n, seed, **params)
    mp = dict(mixing_params or {})
    W = mixing_matrix_auto(G, rule, **mp)
    gap = spectral_gap(W)
    directed = G.is_directed()
    degrees = [d for _, d in (G.in_degree() if directed else G.degree())]
    steps = mixing_time(gap, EPS)
    out = {
        "name": name, "nodes": G.number_of_nodes(), "edges": G.number_of_edges(),
        "degree_min": min(degrees), "degree_max": max(degrees), "diameter": _diameter(G),
        "directed": directed, "mixing": effective_rule(G, rule), "q": q,
        "spectral_gap": gap, "effective_gap": effective_gap(gap, q),
        "contraction_per_round": contraction_factor(gap, q),
        "consensus_contraction": consensus_contraction(gap, q),
        "mixing_time": steps, "mixing_rounds": steps if math.isinf(steps) else math.ceil(steps / q),
        "messages_per_round": (1 if directed else 2) * G.number_of_edges() * q,
        "time_varying": tv, "period": None, "period_gap": None, "expected_gap": None,
        "mean_square_factor": None, "note": None,
    }
    if tv:
        note = f"time-varying: round 0 shown (period {seq.period or 'none: random'})"
        if out["mixing"] != rule:
            note += f"; mixing {rule} means {out['mixing']} on this directed graph"
        out.update(period=seq.period, period_gap=period_gap(seq, rule, q, **mp),
                   expected_gap=getattr(seq, "expected_gap", None),
                   mean_square_factor=getattr(seq, "mean_square_factor", None), note=note)
    return out
