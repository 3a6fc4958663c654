"""Simulated faults ([faults] in the config) and what a round does when training diverges.

Every draw comes from the counter-based stream ``rng.FAULTS`` keyed by (seed, round, client) or
(seed, round, edge), so a run's faults do not depend on the backend, the chunk size or on
whether it was resumed from a checkpoint. Per round t:

    dropout        client i is dropped when u(t, i, DROP) < faults.dropout: it does not train.
                   In gossip it still relays (W is applied to every row, as in the DFL papers'
                   partial participation: Sun et al. TPAMI 2022, Shi et al. ICML 2023); for
                   centralized algorithms it is not aggregated.
    link_failure   edge {u, v} (u < v) is down when u(t, u * n + v, LINK) < faults.link_failure;
                   W_t is rebuilt with topology.mixing on the surviving graph (Metropolis stays
                   symmetric and doubly stochastic). A disconnected round is allowed; its
                   spectral gap is 0 and is recorded, as are live_edges.
    straggler      client i straggles when u(t, i, STRAGGLE) < faults.straggler and then does
                   max(1, ceil(u(t, i, FRACTION) * K_i)) of its K_i local steps.

Non-finite values (NaN / Inf) in a client's loss or model row are caught right after local
training (`diverged`). With faults.on_nan = "stop" the run stops with a DivergedError naming the
client and the round (the run directory keeps its last good checkpoint); with "skip_client" the
client restarts from the mean of its graph neighbours' models (`neighbour_rows`; centralized
algorithms drop it from the average) and its local optimizer state is cleared (`reset_state`).
"""
from __future__ import annotations

from typing import Any, Optional

import networkx as nx
import numpy as np
import torch

from . import rng
from .config import FaultsConfig
from .errors import DivergedError
from .gossip import BankOps

#: Columns of the FAULTS stream: one independent uniform per use.
DROP, STRAGGLE, FRACTION, LINK = 0, 1, 2, 3
_COLUMNS = 4


class FaultModel:
    """The faults of a run: which clients drop or straggle and which links fail, per round."""

    def __init__(self, cfg: FaultsConfig, seed: int):
        self.cfg = cfg
        self.seed = seed

    def _u(self, round_: int, ids: np.ndarray, column: int) -> np.ndarray:
        return rng.uniform(self.seed, rng.FAULTS, round_, ids, _COLUMNS)[:, column]

    def dropped(self, round_: int, n: int) -> np.ndarray:
        """(n,) bool: clients that drop out of round t."""
        if self.cfg.dropout <= 0:
            return np.zeros(n, dtype=bool)
        return self._u(round_, np.arange(n), DROP) < self.cfg.dropout

    def local_steps(self, round_: int, steps: np.ndarray) -> np.ndarray:
        """Each client's local steps in round t: max(1, ceil(u K_i)) for stragglers, else K_i."""
        steps = np.asarray(steps, dtype=np.int64)
        if self.cfg.straggler <= 0:
            return steps
        n = len(steps)
        slow = self._u(round_, np.arange(n), STRAGGLE) < self.cfg.straggler
        part = np.maximum(1, np.ceil(self._u(round_, np.arange(n), FRACTION) * steps)).astype(np.int64)
        return np.where(slow, np.minimum(part, steps), steps)

    def surviving(self, G: nx.Graph, round_: int) -> nx.Graph:
        """G_t without the edges that fail in round t (all nodes kept)."""
        if self.cfg.link_failure <= 0 or G.number_of_edges() == 0:
            return G
        n = G.number_of_nodes()
        directed = G.is_directed()  # an arc (a pulls from b) fails on its own
        edges = np.array([(a, b) if directed else (min(a, b), max(a, b)) for a, b in G.edges() if a != b],
                         dtype=np.int64)
        if len(edges) == 0:
            return G
        up = self._u(round_, edges[:, 0] * n + edges[:, 1], LINK) >= self.cfg.link_failure
        H = nx.DiGraph() if directed else nx.Graph()
        H.add_nodes_from(range(n))
        H.add_edges_from(map(tuple, edges[up]))
        return H


def finite_rows(rows: torch.Tensor) -> torch.Tensor:
    """(n,) bool: rows of an (n, d) tensor without NaN / Inf.

    One reading pass in the common case: a row's sum is finite when all its entries are (the
    exact, five-pass isfinite check runs only on rows whose sum is not, e.g. after an overflow).
    """
    ok = torch.isfinite(rows.sum(dim=1))
    if not bool(ok.all()):
        suspect = (~ok).nonzero().flatten()
        ok[suspect] = torch.isfinite(rows[suspect]).all(dim=1)
    return ok


def diverged(finite: np.ndarray, losses: np.ndarray, active: np.ndarray) -> np.ndarray:
    """(n,) bool: active clients whose training loss or model row (``finite``: the engine's
    ``Engine.finite``) holds a NaN / Inf."""
    return np.asarray(active, dtype=bool) & (~np.isfinite(losses) | ~np.asarray(finite, dtype=bool))


def stop_message(bad: np.ndarray, losses: np.ndarray, round_: int) -> str:
    """One line naming the first diverged client and the round (1-based, as in the metrics)."""
    i = int(np.flatnonzero(bad)[0])
    what = "training loss" if not np.isfinite(losses[i]) else "model"
    more = f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""
    return (f"client {i}{more}: {what} is not finite (NaN/Inf) in round {round_ + 1}; lower local.lr, "
            "check the data, or set faults.on_nan = \"skip_client\" (the last checkpoint is kept)")


def neighbour_rows(ops: BankOps, bank: Any, fallback: Any, bad: np.ndarray, G: nx.Graph) -> dict[int, torch.Tensor]:
    """{bad client: the mean of its good graph neighbours' rows}; a bad client without a good
    neighbour (isolated this round) takes its fallback row (its model at the start of the round).

    ``ops`` (the engine's bank operations) read only the rows needed, wherever the engine keeps them.
    """
    nbrs = {int(i): [j for j in G.neighbors(int(i)) if j != i and not bad[j]] for i in np.flatnonzero(bad)}
    rows = ops.take(bank, sorted({j for js in nbrs.values() for j in js}))
    start = ops.take(fallback, [i for i, js in nbrs.items() if not js])
    return {i: torch.stack([rows[j] for j in js]).mean(0) if js else start[i] for i, js in nbrs.items()}


def handle_divergence(on_nan: str, engine: Any, bad: np.ndarray, losses: np.ndarray, round_: int,
                      graph: Optional[nx.Graph], bank: Any, before: Any) -> tuple[Any, Any]:
    """Apply faults.on_nan to the clients in `bad`; returns the round's (bank, start-of-round bank).

    "stop" raises DivergedError. "skip_client": a gossip client's row (both the pre-round row that
    D-PSGD mixes and the trained one) becomes its neighbours' mean on the round's ``graph``; a
    centralized client (``graph`` None) keeps the global model, and the caller leaves it out of
    the average. Either way its loss is not reported (set to nan in ``losses``) and its local
    optimizer state is cleared. The rows change through the engine's bank operations, wherever
    the engine keeps them.
    """
    if on_nan == "stop":
        raise DivergedError(stop_message(bad, losses, round_))
    losses[bad] = np.nan
    engine.reset_clients(np.flatnonzero(bad))  # momentum etc. of the bad clients
    if graph is None:
        return engine.patched(bank, engine.take(before, np.flatnonzero(bad))), before
    new = neighbour_rows(engine, bank, before, bad, graph)
    return engine.patched(bank, new), engine.patched(before, new)


def mean_loss(losses: np.ndarray) -> float:
    """Mean training loss of the clients that trained (NaN when none did, without a warning)."""
    ok = np.isfinite(losses)
    return float(losses[ok].mean()) if ok.any() else float("nan")


def round_metrics(cfg: FaultsConfig, graph: Optional[nx.Graph], active: np.ndarray, steps: np.ndarray,
                  planned: np.ndarray, bad: np.ndarray) -> dict[str, Any]:
    """The fault columns of a round's metrics row: live_edges (gossip: the round's ``graph``),
    stragglers (clients that took fewer than their ``planned`` steps) and diverged_clients (when
    those faults are configured)."""
    out: dict[str, Any] = {}
    if graph is not None:
        out["live_edges"] = graph.number_of_edges()
    if cfg.straggler > 0:
        out["stragglers"] = int(((steps < planned) & active).sum())
    if cfg.on_nan == "skip_client":
        out["diverged_clients"] = int(bad.sum())
    return out
