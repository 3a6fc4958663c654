"""Gossip between the Ray actors: who sends which rows to whom, and compressed messages.

``ExchangePlan``: for X <- W X over the actors' contiguous row blocks, each actor's rows of W
(columns: its own rows, then the rows it receives, source by source) and the rows it publishes
for each destination. Only rows with W_ij != 0 travel.

Compressed gossip (dfl.choco, ``RayEngine.compressed_mix``): every actor keeps the public copies
x_hat of its own rows (a slot, as the models) and, for the x_hat slot, a *halo*: its copies of
the rows it receives, updated with the same decoded messages as their owners' (Choco-Gossip's
"every neighbour holds x_hat_j"). One step, in the two phases of plain gossip:

    send      q_i = C(x_i - x_hat_i) for the actor's rows i, keyed by their global ids (the
              vectorized engine's random streams); x_hat_i += q_i; each destination gets the
              wire format (Compressor.encode) of the rows it needs, and the dense x_hat_j of
              those whose copy it does not hold (``ExchangePlan.stale``: a new neighbour of a
              time-varying graph, x_hat placed from a checkpoint or the initial model)
    receive   copies x_hat_j += decoded q_j, then x_i <- x_i + gamma (sum_j W_ij x_hat_j - x_hat_i)
              over the block's rows of W (dfl.choco.consensus)

The naive mode sends C(x_i) and mixes the decoded messages, without copies. Owners and
destinations decode the same wire arrays, so every copy equals its owner's x_hat bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..choco import Spec, consensus
from ..compression import Key

#: A halo: (sorted global ids of the copied rows, their copies (len(ids), d)).
Halo = tuple[np.ndarray, torch.Tensor]


def exchange_plan(W: Any, blocks: list[tuple[int, int]]) -> tuple[list[Any], list[list[tuple[int, int]]]]:
    """Who sends which rows to whom for X <- W X over the actors' row blocks.

    Returns per actor (its rows of W with columns [own rows, then the rows of each source actor in
    order], the local row indices it publishes for each destination), and per actor the list of
    (source actor, index of this actor among the source's destinations).
    """
    import scipy.sparse as sp
    if isinstance(W, torch.Tensor) and W.layout == torch.sparse_csr:
        Wc = sp.csr_matrix((W.values().cpu().double().numpy(), W.col_indices().cpu().numpy(),
                            W.crow_indices().cpu().numpy()), shape=tuple(W.shape))
    else:
        Wc = sp.csr_matrix(np.asarray(W.cpu().double() if isinstance(W, torch.Tensor) else W))
    k = len(blocks)
    needs = [[np.zeros(0, dtype=np.int64)] * k for _ in range(k)]  # needs[a][b]: global rows of b for a
    for a, (lo, hi) in enumerate(blocks):
        cols = np.unique(Wc[lo:hi].indices)
        for b, (blo, bhi) in enumerate(blocks):
            if b != a:
                needs[a][b] = cols[(cols >= blo) & (cols < bhi)]
    dests = [[a for a in range(k) if a != b and len(needs[a][b])] for b in range(k)]
    per_actor, sources = [], []
    for a, (lo, hi) in enumerate(blocks):
        order = np.concatenate([np.arange(lo, hi)] + [needs[a][b] for b in range(k) if b != a])
        block = Wc[lo:hi][:, order].toarray().astype(np.float32)
        per_actor.append((block, [needs[d][a] - lo for d in dests[a]]))
        sources.append([(b, dests[b].index(a)) for b in range(k) if b != a and len(needs[a][b])])
    return per_actor, sources


@dataclass(frozen=True)
class ExchangePlan:
    """``exchange_plan`` of one W, numbered ``key`` (the actors keep it under that key).

    Attributes:
        per_actor, sources: ``exchange_plan``'s.
        incoming: per actor, the global ids of the rows it receives, in its columns' order
            (ascending: sources in block order, rows sorted).
        dests: per actor, the actors it publishes for, in its publishing order.
    """

    W: Any
    key: int
    blocks: list[tuple[int, int]]
    per_actor: list[Any]
    sources: list[list[tuple[int, int]]]
    incoming: list[np.ndarray]
    dests: list[list[int]]

    @classmethod
    def build(cls, W: Any, key: int, blocks: list[tuple[int, int]]) -> "ExchangePlan":
        per_actor, sources = exchange_plan(W, blocks)
        incoming = [np.concatenate([np.zeros(0, dtype=np.int64)] +
                                   [blocks[b][0] + per_actor[b][1][slot] for b, slot in src]) for src in sources]
        dests = [[a for a in range(len(blocks)) for b, _ in sources[a] if b == s] for s in range(len(blocks))]
        return cls(W, key, blocks, per_actor, sources, incoming, dests)

    def nret(self, b: int) -> int:
        """Objects actor b publishes per step (one per destination; at least one for Ray)."""
        return max(1, len(self.per_actor[b][1]))

    def stale(self, held: Optional[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """Per publishing actor, per destination: which published rows the destination holds no
        copy of (bool masks), given per actor the ids of its halo (``held``; None: no halo)."""
        out = []
        for b, (lo, _) in enumerate(self.blocks):
            rows = self.per_actor[b][1]
            out.append([np.ones(len(r), dtype=bool) if held is None else ~np.isin(lo + r, held[d])
                        for d, r in zip(self.dests[b], rows)])
        return out


def returns(outs: list[Any]) -> Any:
    """A remote method's value for ``num_returns = max(1, len(outs))``."""
    return True if not outs else outs[0] if len(outs) == 1 else tuple(outs)


def send(spec: Spec, x: torch.Tensor, x_hat: Optional[torch.Tensor], key: Key, dests: list[np.ndarray],
         stale: Optional[list[np.ndarray]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Phase 1 of a compressed step on a block: (own, one message per destination).

    own is the block's x_hat + q (choco) or q = C(x) (naive), decoded from the wire arrays as
    every receiver decodes them; a message holds the wire arrays of the destination's rows and,
    for the rows flagged in ``stale`` (None: none), their dense x_hat before the step."""
    wire = spec.compress.encode(x if x_hat is None else x - x_hat, key)
    own = spec.compress.decode_wire(wire, x.shape[1]).to(x.device)
    if x_hat is not None:
        own = x_hat + own
    messages = []
    for s, rows in enumerate(dests):
        m: dict[str, Any] = {"wire": {k: v[rows] for k, v in wire.items()}}
        if x_hat is not None:
            m["stale"] = stale[s] if stale is not None else np.zeros(len(rows), dtype=bool)
            m["dense"] = x_hat[torch.as_tensor(rows[m["stale"]], device=x.device)].cpu()
        messages.append(m)
    return own, messages


def receive(spec: Spec, messages: tuple[dict[str, Any], ...], ids: np.ndarray, halo: Optional[Halo],
            d: int, device: torch.device) -> torch.Tensor:
    """Phase 2's columns from the other actors: the updated copies x_hat_j of the rows ``ids``
    (choco; from the ``halo`` and the dense rows sent), or the decoded messages (naive)."""
    if not messages:
        return torch.zeros(0, d, device=device)
    q = torch.cat([spec.compress.decode_wire(m["wire"], d) for m in messages]).to(device)
    if spec.mode == "naive":
        return q
    stale = np.concatenate([m["stale"] for m in messages])
    prev = torch.empty_like(q)
    if not stale.all():
        held_ids, rows = halo
        pos = np.searchsorted(held_ids, ids[~stale])
        assert np.array_equal(held_ids[np.minimum(pos, len(held_ids) - 1)], ids[~stale]), "a copy not held"
        prev[torch.as_tensor(~stale, device=device)] = rows[torch.as_tensor(pos, device=device)]
    if stale.any():
        prev[torch.as_tensor(stale, device=device)] = torch.cat([m["dense"] for m in messages]).to(device)
    return prev.add_(q)


def mix_rows(spec: Spec, W: torch.Tensor, x: torch.Tensor, own: torch.Tensor, copies: torch.Tensor) -> torch.Tensor:
    """x + gamma (W [own; copies] - own): the block's rows after the step (dfl.choco.consensus)."""
    return consensus(x, W @ torch.cat([own, copies]), own, spec.gamma)
