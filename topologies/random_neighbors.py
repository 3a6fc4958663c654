"""Random-neighbours topology: every round each node averages itself and k random others.

The time-varying "random" client selection of DisPFL (Dai et al., "DisPFL: Towards
Communication-Efficient Personalized Federated Learning via Decentralized Sparse Training",
ICML 2022; `cs = "random"` in rong-dai/DisPFL), which the DFedSAM experiments (Shi et al.,
"Improving the Model Consistency of Decentralized Federated Learning", ICML 2023) follow with
k = 10. In round t node i pulls the models of k distinct others N_t(i), drawn uniformly from the
n - 1 nodes other than i, and takes the plain mean of those and its own:

    W_t[i, j] = 1 / (k + 1)   for j = i and j in N_t(i),   0 otherwise

The round's graph is a DiGraph with an arc j -> i for every j in N_t(i) (i pulls x_j): every
in-degree is k, the out-degrees vary. W_t is row-stochastic, but neither symmetric nor doubly
stochastic, so gossip does not keep the plain average exactly. In expectation

    E[W_t] = a I + b (J - I),   a = 1/(k+1),  b = k / ((k+1)(n-1)),

with eigenvalues 1 and a - b (n - 1 times): the gap of E[W_t] is 1 - |a - b| (`expected_gap`).
That gap overstates the mixing (E[W_t] is nearly J/n). What one gossip step does to the
consensus distance Xi = (1/n) ||P X||_F^2, P = I - J/n, is exact in closed form: for any X,

    E[Xi(W_t X)] = alpha Xi(X),   alpha = (n/(k+1) - 1 - k (1-p) / (k+1)^2) / (n - 1),  p = k/(n-1)

(M = E[W_t^T P W_t] commutes with every permutation and M 1 = 0, so M = alpha P with
(n - 1) alpha = tr M = E||W_t||_F^2 - E||W_t^T 1||^2 / n; a node is pulled by
Binomial(n - 1, p) others). `mean_square_factor` is alpha; a run's `period_gap` is the
mean-square gap 1 - alpha^(Q/2) (exact for Q = 1; for Q > 1 the round reuses W_t, which mixes
slightly less than that). A single round's `spectral_gap` is 1 - |lambda_2(W_t)|, complex
lambda_2 by modulus; it is close to 1 - sqrt(alpha).

N_t(i) depends only on (seed, t, i) (and n, k): a counter-based stream, splitmix64 of the
packed key (seed, t, i, draw), feeds Floyd's algorithm, which takes exactly k draws for a
uniform k-subset. Rows of different nodes never share draws, so a row is the same whether it is
computed alone or with all the others (DisPFL's reference seeds a global numpy generator with
round + client and redraws while it picks i itself: the same distribution, not the same draws).

>>> seq = random_neighbors(6, seed=0, k=2)
>>> G = seq.graph(0)
>>> G.is_directed(), sorted(d for _, d in G.in_degree())
(True, [2, 2, 2, 2, 2, 2])
>>> round(seq.expected_gap, 6), round(seq.mean_square_factor, 6)   # 1 - |1/3 - 2/15|
(0.8, 0.173333)
"""
from __future__ import annotations

from functools import lru_cache

import networkx as nx
import numpy as np

from .errors import TopologyError
from .generators import int_param, register
from .timevarying import GraphSequence

DEFAULT_K = 10
"""Neighbours per round in the DFedSAM / DisPFL setup (capped at n - 1 when k is not given)."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SALT = 0x52414E444E4252  # "RANDNBR": this family's stream, apart from any other use of the seed


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, t: int, clients: np.ndarray, count: int) -> np.ndarray:
    """(len(clients), count) float64 uniforms in [0, 1); entry (c, j) is a hash of
    (SALT, seed, t, clients[c], j) only (splitmix64 chained over the parts)."""
    h = np.uint64(0)
    parts = (_SALT, seed, t, np.asarray(clients, dtype=np.uint64).reshape(-1, 1),
             np.arange(count, dtype=np.uint64).reshape(1, -1))
    with np.errstate(over="ignore"):
        for p in parts:
            h = _splitmix(h + _GOLDEN + np.asarray(p, dtype=np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def neighbours(seed: int, t: int, clients, n: int, k: int) -> np.ndarray:
    """The k nodes each of `clients` pulls in round t: (len(clients), k) int64, rows sorted.

    Row c is a uniform k-subset of {0..n-1} minus clients[c] and depends only on
    (seed, t, clients[c], n, k). Floyd's algorithm on m = n - 1 slots: for j = m-k .. m-1 draw
    r uniform in [0, j]; keep r unless already kept, else keep j; slot s maps to node s + (s >= i).

    >>> neighbours(0, 3, [4], 8, 3).tolist() == neighbours(0, 3, range(8), 8, 3)[4:5].tolist()
    True
    """
    clients = np.asarray(list(clients) if not isinstance(clients, np.ndarray) else clients,
                         dtype=np.int64).reshape(-1)
    m = n - 1
    u = _uniforms(seed, t, clients, k)
    chosen = np.empty((len(clients), k), dtype=np.int64)
    for s in range(k):
        j = m - k + s
        r = np.floor(u[:, s] * (j + 1)).astype(np.int64)
        taken = (chosen[:, :s] == r[:, None]).any(axis=1)
        chosen[:, s] = np.where(taken, j, r)
    chosen += chosen >= clients[:, None]  # skip the node itself
    chosen.sort(axis=1)
    return chosen


def expected_gap(n: int, k: int) -> float:
    """1 - |1/(k+1) - k/((k+1)(n-1))|: spectral gap of E[W_t] = a I + b (J - I)."""
    return 1.0 - abs(1.0 / (k + 1) - k / ((k + 1) * (n - 1)))


def mean_square_factor(n: int, k: int) -> float:
    """alpha = E[Xi(W_t X)] / Xi(X) for one gossip step (see the module docstring); 0 for k = n-1."""
    p = k / (n - 1)
    return max(0.0, (n / (k + 1) - 1.0 - k * (1.0 - p) / (k + 1) ** 2) / (n - 1))


@register("random_neighbors", 2, "round t: each node pulls k random others and averages with "
          "weight 1/(k+1) (directed, row-stochastic; DisPFL/DFedSAM 'random'); param k "
          f"(default min({DEFAULT_K}, n-1))", time_varying=True)
def random_neighbors(n: int, seed: int = 0, k: int | None = None) -> GraphSequence:
    """DiGraph per round with arcs j -> i for the k nodes j that i pulls (see module docstring).

    Args:
        n: number of nodes (>= 2).
        seed: integer >= 0; same (seed, t) gives the same graph.
        k: neighbours per node and round, in [1, n-1]; None: min(10, n - 1).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TopologyError(f"random_neighbors: seed must be an integer >= 0, got {seed!r}")
    k = min(DEFAULT_K, n - 1) if k is None else int_param("random_neighbors", "k", k, 1, n - 1)

    @lru_cache(maxsize=4)
    def make(t: int) -> nx.DiGraph:
        nb = neighbours(seed, t, np.arange(n), n, k)
        G = nx.DiGraph(name="random_neighbors", layout="circular", k=k, round=t)
        G.add_nodes_from(range(n))
        G.add_edges_from((int(j), i) for i in range(n) for j in nb[i])
        return G

    return GraphSequence("random_neighbors", n, make, period=None, expected_gap=expected_gap(n, k),
                         mean_square_factor=mean_square_factor(n, k))
