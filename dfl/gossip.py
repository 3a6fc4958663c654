"""Gossip averaging X <- W^Q X over the stacked client parameters, and each round's W.

W is built only in topologies/ (a numpy matrix); here it becomes a torch operator, dense or
sparse CSR, whichever is cheaper for the graph, and is applied Q times. Every row of X is one
client's flattened model (or, for a parameter bank, every leading index of each tensor).
``Mixing`` gives a run's W_t round by round (cached while the graph stays the same);
``BankOps`` are the operations a round applies to whole banks, in this process.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

import networkx as nx
import numpy as np
import torch

import topologies

if TYPE_CHECKING:
    from . import choco

Operator = Union[torch.Tensor, np.ndarray]

#: Use sparse CSR when at most this fraction of W's entries is non-zero (and W has at least
#: SPARSE_MIN_N ** 2 entries: a block of W's rows follows the rule of the square it could be).
SPARSE_DENSITY = 0.1
SPARSE_MIN_N = 64


def as_operator(W: Operator, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                sparse: bool | None = None) -> torch.Tensor:
    """W (numpy or torch, dense or scipy sparse) -> a torch matrix, sparse CSR when W is sparse enough.

    Args:
        W: n x n mixing matrix.
        sparse: force dense (False) or CSR (True); None picks CSR when density <= SPARSE_DENSITY
            and W has at least SPARSE_MIN_N ** 2 entries (n >= SPARSE_MIN_N for a square W).
    """
    if hasattr(W, "tocsr"):  # scipy.sparse: stays sparse unless dense is asked for (n can be 1e5)
        csr = W.tocsr()
        if sparse is False:
            return torch.as_tensor(csr.toarray(), dtype=dtype, device=device)
        with warnings.catch_warnings():  # torch calls its CSR support "beta"; matmul is all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.as_tensor(csr.indptr, dtype=torch.int64), torch.as_tensor(csr.indices, dtype=torch.int64),
                torch.as_tensor(csr.data, dtype=dtype), size=csr.shape).to(device)
    Wt = torch.as_tensor(np.asarray(W) if not isinstance(W, torch.Tensor) else W, dtype=dtype)
    if Wt.is_sparse or Wt.layout == torch.sparse_csr:
        Wt = Wt.to_dense()
    if sparse is None:
        density = float((Wt != 0).sum()) / float(max(1, Wt.numel()))
        sparse = Wt.numel() >= SPARSE_MIN_N ** 2 and density <= SPARSE_DENSITY
    Wt = Wt.to(device)
    if not sparse:
        return Wt
    with warnings.catch_warnings():  # torch calls its CSR support "beta"; matmul is all we use
        warnings.simplefilter("ignore", UserWarning)
        return Wt.to_sparse_csr()


#: A sparse product on CPU runs over blocks of columns of about this many bytes (all n rows).
BLOCK_BYTES = 16 * 2**20


def _apply(Wt: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    flat = X.reshape(X.shape[0], -1)
    if Wt.layout != torch.sparse_csr:
        return torch.mm(Wt, flat).reshape(X.shape)
    n, d = flat.shape
    width = max(1024, BLOCK_BYTES // (n * flat.element_size()))
    if flat.device.type != "cpu" or d <= 2 * width:
        return (Wt @ flat).reshape(X.shape)
    # CSR @ X reads every row of X once per non-zero in its column; a block of columns that stays
    # in cache is read from memory once (n = 1,000, 1M parameters on 2 cores: exponential graph 1.7x
    # faster, ring 1.1x)
    out = torch.empty_like(flat)
    for c0 in range(0, d, width):
        out[:, c0:c0 + width] = Wt @ flat[:, c0:c0 + width]
    return out.reshape(X.shape)


def mix(X: torch.Tensor, W: Operator, steps: int = 1) -> torch.Tensor:
    """Return W^steps X, the result of `steps` gossip rounds (contract).

    X_i <- sum_j W_ij X_j, repeated `steps` times. X is (n, d) (or (n, ...): trailing dims are
    flattened and restored).

    >>> import numpy as np; W = np.full((2, 2), 0.5)
    >>> mix(torch.tensor([[0.0], [2.0]]), W).tolist()
    [[1.0], [1.0]]
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    Wt = W if isinstance(W, torch.Tensor) and W.dtype == X.dtype and W.device == X.device \
        else as_operator(W, X.device, X.dtype)
    for _ in range(steps):
        X = _apply(Wt, X)
    return X


@dataclass(frozen=True)
class RoundGraph:
    """One round's communication: its graph, W on it, and the figures the metrics report.

    Attributes:
        graph: the round's graph (after failed links or lost nodes; all n nodes kept).
        W: topologies' mixing matrix on it: numpy, scipy sparse above topologies.DENSE_MAX_N nodes.
        operator: W as a torch operator on the run's device (``as_operator``).
        degrees: (n,) degrees, in-degrees on a directed graph (arc j -> i: i pulls x_j), so that
            gossip bytes = Q * models received.
        gap: spectral gap of W (of the surviving nodes' block when some are lost).
    """

    graph: nx.Graph
    W: Any
    operator: torch.Tensor
    degrees: np.ndarray
    gap: float


class Mixing:
    """W_t of a run, round by round: topology.mixing on the round's graph.

    ``surviving(G, t)`` removes the round's failed links (dfl.faults); ``mixing(t, lost)`` also
    isolates the ``lost`` nodes (Flower nodes that stopped answering). ``varying``: the graph can
    change from round to round (a time-varying topology, link failures); else W_0 serves every
    round. Only the last W is kept (other lost nodes, or the next round of a varying graph,
    rebuild it).
    """

    def __init__(self, graphs: "topologies.GraphSequence", rule: str, *, varying: bool,
                 device: torch.device | str = "cpu",
                 surviving: Optional[Callable[[nx.Graph, int], nx.Graph]] = None,
                 params: Optional[Mapping[str, Any]] = None):
        self.graphs, self.rule, self.device, self.varying = graphs, rule, device, varying
        self.params = dict(params or {})  # the rule's own ([topology.mixing_params]: laplacian a, ...)
        self.surviving = surviving or (lambda G, t: G)
        self._build = lru_cache(maxsize=1)(self._round_graph)

    def __call__(self, t: int, lost: frozenset[int] = frozenset()) -> RoundGraph:
        return self._build(t if self.varying else 0, lost)

    def _round_graph(self, t: int, lost: frozenset[int]) -> RoundGraph:
        G = without_nodes(self.surviving(self.graphs.graph(t), t), lost)
        n = G.number_of_nodes()
        W = topologies.mixing_matrix_auto(G, self.rule, **self.params)
        deg = np.array([d for _, d in sorted(G.in_degree() if G.is_directed() else G.degree())], dtype=np.float64)
        keep = np.array([i for i in range(n) if i not in lost], dtype=np.int64)
        gap = topologies.spectral_gap(W[np.ix_(keep, keep)] if lost else W) if len(keep) else 0.0
        return RoundGraph(G, W, as_operator(W, self.device), deg, gap)


def without_nodes(G: nx.Graph, lost: frozenset[int]) -> nx.Graph:
    """G with every edge of the `lost` nodes removed (all nodes kept: a lost node is isolated)."""
    if not lost:
        return G
    H = G.__class__()
    H.add_nodes_from(G.nodes())
    H.add_edges_from((a, b) for a, b in G.edges() if a not in lost and b not in lost)
    return H


class BankOps:
    """What a round does to whole parameter banks, here on torch tensors in this process.

    The engines' base class (dfl.engines.Engine) inherits these; an engine that keeps the
    clients' rows elsewhere (Ray actors) overrides them on its own handles, so that callers never
    ask what kind of bank they hold. RoundContext hands them to the algorithms.
    """

    def mix(self, X: torch.Tensor, W: Operator, steps: int = 1) -> torch.Tensor:
        """W^steps X (``mix``)."""
        return mix(X, W, steps)

    def compressed_mix(self, X: torch.Tensor, x_hat: Optional[torch.Tensor], W: Operator, steps: int, round_: int,
                       spec: "choco.Spec") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(X, x_hat) after `steps` compressed gossip steps of round `round_` (dfl.choco): x_hat
        the clients' public copies (None: the naive mode), `spec` the message format, gamma, mode
        and seed. Every engine gives the same numbers (messages keyed by global client ids)."""
        return spec(X, x_hat, W, steps, round_)

    def combine(self, terms: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
        """sum_k c_k X_k, added left to right: [(1, A), (-1, B), (1, C)] is (A - B) + C exactly."""
        (c0, X0), *rest = terms
        out = X0 * c0
        for c, X in rest:
            out.add_(X, alpha=c)
        return out

    def copy(self, X: torch.Tensor) -> torch.Tensor:
        """A copy of X that training (which updates banks in place) leaves alone."""
        return X.clone()

    def take(self, X: torch.Tensor, rows: list[int]) -> dict[int, torch.Tensor]:
        """{i: X[i]} for the given rows."""
        return {int(i): X[int(i)] for i in rows}

    def patched(self, X: torch.Tensor, new_rows: dict[int, torch.Tensor]) -> torch.Tensor:
        """A new bank: X with the given rows replaced."""
        out = X.clone()
        for i, row in new_rows.items():
            out[i] = row
        return out

    def gather(self, X: torch.Tensor) -> torch.Tensor:
        """The bank as one tensor on the CPU (checkpoints)."""
        return X.cpu()
