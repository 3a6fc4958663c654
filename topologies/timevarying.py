"""Graph sequences: a graph for every round t, time-varying or constant.

The engine asks `seq.graph(t)` (or `seq.mixing(t, rule)`) each round and needs not know whether
the topology changes. Time-varying families are registered in `generators.GRAPHS` with
`time_varying=True`; their generator returns the sequence object.

One-peer exponential graph, in its undirected (hypercube) form: round t pairs node i with
i XOR 2^k, k = t mod tau, tau = ceil(log2 n); i.e. i ~ i + 2^k for the i whose bit k is 0.
Each round is a perfect matching when n is a power of two (for other n the nodes whose partner
would be >= n sit the round out), and with Metropolis weights W_t = (I + P_t) / 2, so

    W_{tau-1} ... W_1 W_0 = J / n        (exact averaging in log2 n rounds, n = 2^tau)

(Ying et al., "Exponential graph is provably efficient for decentralized deep training",
NeurIPS 2021; the directed form i -> i + 2^k gives the same product).

>>> seq = one_peer_exponential(8)
>>> sorted(seq.graph(1).edges())
[(0, 2), (1, 3), (4, 6), (5, 7)]
>>> seq.period
3
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import networkx as nx
import numpy as np

from .errors import TopologyError
from .generators import int_param, register


class GraphSequence:
    """A graph per round: `graph(t)` for t = 0, 1, 2, ...

    Attributes:
        name: the topology name.
        n: number of nodes.
        period: rounds after which the graphs repeat (1 for a static graph, None if never).
        time_varying: False only for a constant sequence.
        expected_gap: spectral gap of E[W_t] under the family's own rule, and
        mean_square_factor: E[Xi(W_t X)] / Xi(X) for one gossip step, for random sequences
            that know them in closed form (random_neighbors); None otherwise.
    """

    def __init__(self, name: str, n: int, make: Callable[[int], nx.Graph],
                 period: int | None, time_varying: bool = True,
                 expected_gap: float | None = None, mean_square_factor: float | None = None):
        self.name, self.n, self.period, self.time_varying = name, n, period, time_varying
        self.expected_gap, self.mean_square_factor = expected_gap, mean_square_factor
        self._make = make

    def graph(self, t: int) -> nx.Graph:
        """The graph of round t (t >= 0)."""
        t = int_param(self.name, "round t", t, 0)
        return self._make(t % self.period if self.period else t)

    def mixing(self, t: int, rule: str = "metropolis", sparse: bool = False, **params: Any):
        """Mixing matrix of round t under `rule` and its `params` (built on each call: a run keeps
        the W it uses in dfl.gossip.Mixing)."""
        from .mixing import mixing_matrix, mixing_matrix_sparse

        return (mixing_matrix_sparse if sparse else mixing_matrix)(self.graph(t), rule, **params)

    def __repr__(self) -> str:
        return f"GraphSequence({self.name!r}, n={self.n}, period={self.period})"


def constant_sequence(G: nx.Graph) -> GraphSequence:
    """The sequence G, G, G, ... (a static graph seen as a sequence)."""
    name = G.graph.get("name", "graph")
    return GraphSequence(name, G.number_of_nodes(), lambda t: G, period=1, time_varying=False)


def _matching_graph(name: str, n: int, pairs) -> nx.Graph:
    G = nx.Graph(name=name, layout="circular")
    G.add_nodes_from(range(n))
    G.add_edges_from(pairs)
    return G


@register("one_peer_exponential", 2, "round t: i ~ i XOR 2^(t mod log2 n), a perfect matching "
          "for n = 2^m; exact averaging in log2 n rounds", time_varying=True)
def one_peer_exponential(n: int, seed: int = 0) -> GraphSequence:
    """One-peer exponential graph: round t pairs i with i XOR 2^(t mod ceil(log2 n))."""
    tau = max(1, (n - 1).bit_length())

    @lru_cache(maxsize=None)
    def make(t: int) -> nx.Graph:
        k = 1 << t
        pairs = [(i, i ^ k) for i in range(n) if not i & k and i ^ k < n]
        return _matching_graph("one_peer_exponential", n, pairs)

    return GraphSequence("one_peer_exponential", n, make, period=tau)


@register("random_matching", 2, "round t: a uniform random matching, seeded by (seed, t)",
          time_varying=True)
def random_matching(n: int, seed: int = 0) -> GraphSequence:
    """Random matching per round: a permutation drawn from the stream (seed, t) paired up
    consecutively (perfect when n is even; one node sits out when n is odd)."""
    if not isinstance(seed, int) or seed < 0:
        raise TopologyError(f"random_matching: seed must be an integer >= 0, got {seed!r}")

    def make(t: int) -> nx.Graph:
        perm = np.random.default_rng([seed, t]).permutation(n)
        pairs = [(int(a), int(b)) for a, b in zip(perm[0::2], perm[1::2])]
        return _matching_graph("random_matching", n, pairs)

    return GraphSequence("random_matching", n, make, period=None)
