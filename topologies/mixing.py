"""Mixing matrices W of a graph: gossip is X <- W X.

A good W is symmetric, doubly stochastic (rows and columns sum to 1), with W_ij > 0 only on
edges and the diagonal. With d_i the degree of node i and d_max the largest degree:

    metropolis          W_ij = 1 / (1 + max(d_i, d_j))   on edges,  W_ii = 1 - sum_j W_ij
    max_degree          W_ij = 1 / (1 + d_max)           on edges,  W_ii = 1 - d_i / (1 + d_max)
    laplacian           W = I - a L, L = D - A,  a in (0, 1/d_max], default a = 1 / (d_max + 1)
                        (so the default equals max_degree; pass a=... to change it)
    uniform_neighbour   W_ij = 1 / (d_i + 1) for j in N(i) and j = i  (row-stochastic only:
                        not symmetric, not doubly stochastic on irregular graphs -> warning).
                        On a directed graph N(i) are i's in-neighbours (arc j -> i: i pulls x_j)
                        and d_i its in-degree: the only rule for directed graphs (random_neighbors)
    fastest_mixing      symmetric W minimising max(|lambda_2|, |lambda_n|) over the edge weights
                        (Boyd, Diaconis, Xiao, SIAM Review 2004), projected subgradient from
                        Metropolis; dense, n <= 500

Directed graphs have no symmetric weights: there the default `metropolis` gives way to
`uniform_neighbour` (see `effective_rule`), and the other symmetric rules are an error.

>>> import networkx as nx
>>> mixing_matrix(nx.path_graph(3)).round(3).tolist()
[[0.667, 0.333, 0.0], [0.333, 0.333, 0.333], [0.0, 0.333, 0.667]]
>>> mixing_matrix(nx.DiGraph([(1, 0), (2, 0), (0, 1), (0, 2)])).round(3).tolist()
[[0.333, 0.333, 0.333], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .errors import TopologyError, check_params, unknown_name

FASTEST_MIXING_MAX_N = 500


# ---------------------------------------------------------------- graph -> arrays


def _edges(G: nx.Graph) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(n, u, v, degree): each undirected edge once, self-loops dropped, nodes 0..n-1."""
    if G.is_directed():
        raise TopologyError("mixing matrices need an undirected graph (got a directed one)")
    n = G.number_of_nodes()
    if set(G.nodes) != set(range(n)):
        raise TopologyError(f"graph nodes must be 0..{n - 1}; relabel with "
                            "networkx.convert_node_labels_to_integers")
    e = np.array([(a, b) for a, b in G.edges() if a != b], dtype=np.int64).reshape(-1, 2)
    u, v = e[:, 0], e[:, 1]
    deg = np.bincount(np.concatenate([u, v]), minlength=n).astype(np.float64)
    return n, u, v, deg


def _assemble(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
    """CSR matrix with the given off-diagonal entries and W_ii = 1 - sum_j W_ij."""
    off = sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float64)
    diag = 1.0 - np.asarray(off.sum(axis=1)).ravel()
    return (off + sp.diags(diag, format="csr")).tocsr()


def _symmetric(n, u, v, w) -> sp.csr_matrix:
    return _assemble(n, np.concatenate([u, v]), np.concatenate([v, u]), np.concatenate([w, w]))


# ---------------------------------------------------------------- rules


def metropolis(n, u, v, deg) -> sp.csr_matrix:
    """Metropolis-Hastings: W_ij = 1 / (1 + max(d_i, d_j)) on edges."""
    return _symmetric(n, u, v, 1.0 / (1.0 + np.maximum(deg[u], deg[v])))


def max_degree(n, u, v, deg) -> sp.csr_matrix:
    """Constant weight W_ij = 1 / (1 + d_max) on edges."""
    dmax = deg.max(initial=0.0)
    return _symmetric(n, u, v, np.full(len(u), 1.0 / (1.0 + dmax)))


def laplacian(n, u, v, deg, a: float | None = None) -> sp.csr_matrix:
    """W = I - a L: weight a on edges; a in (0, 1/d_max] keeps W non-negative."""
    dmax = deg.max(initial=0.0)
    if a is None:
        a = 1.0 / (1.0 + dmax)
    hi = 1.0 / dmax if dmax else float("inf")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= hi:
        raise TopologyError(f"laplacian: a must be in (0, 1/max_degree] = (0, {hi:.4g}], got {a!r}")
    return _symmetric(n, u, v, np.full(len(u), float(a)))


def uniform_neighbour(n, u, v, deg) -> sp.csr_matrix:
    """Row i spreads 1 / (d_i + 1) over itself and its neighbours (random walk with self-loop)."""
    if len(u) and deg.min() != deg.max():
        warnings.warn(
            f"uniform_neighbour: W is row-stochastic but not symmetric nor doubly stochastic on "
            f"this irregular graph (degrees {deg.min():.0f}..{deg.max():.0f}); gossip converges "
            "to a degree-weighted, not the plain, average. Use metropolis for the plain average.",
            UserWarning, stacklevel=4)
    rows, cols = np.concatenate([u, v]), np.concatenate([v, u])
    return _assemble(n, rows, cols, 1.0 / (deg[rows] + 1.0))


def fastest_mixing(n, u, v, deg, iters: int = 300) -> np.ndarray:
    """Symmetric W = I - sum_e w_e (e_i - e_j)(e_i - e_j)^T minimising
    f(w) = max(lambda_2(W), -lambda_n(W)) over w >= 0, sum_{e at i} w_e <= 1 (W >= 0).

    Projected subgradient (Boyd, Diaconis, Xiao 2004, section 5): with u2, un the unit
    eigenvectors of lambda_2, lambda_n, a subgradient is -(u2_i - u2_j)^2 (lambda_2 active) or
    (un_i - un_j)^2 (-lambda_n active); steps 0.5 / sqrt(k); the projection clips w >= 0 and
    scales the edges of over-full nodes. Starts at Metropolis and keeps the best iterate, so
    the gap is never below Metropolis'.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise TopologyError(f"fastest_mixing: iters must be an integer >= 1, got {iters!r}")
    if n > FASTEST_MIXING_MAX_N:
        raise TopologyError(f"fastest_mixing: n must be <= {FASTEST_MIXING_MAX_N} (dense "
                            f"eigendecompositions), got n={n}; use metropolis for large graphs")

    def dense(w):
        W = np.zeros((n, n))
        W[u, v] = w
        W[v, u] = w
        W[np.arange(n), np.arange(n)] = 1.0 - W.sum(axis=1)
        return W

    w = 1.0 / (1.0 + np.maximum(deg[u], deg[v]))
    best_f, best_w = np.inf, w
    for k in range(1, iters + 1):
        vals, vecs = np.linalg.eigh(dense(w))
        lam2, lamn = vals[-2], vals[0]
        f = max(lam2, -lamn)
        if f < best_f:
            best_f, best_w = f, w.copy()
        x = vecs[:, -2] if lam2 >= -lamn else vecs[:, 0]
        g = (x[u] - x[v]) ** 2 * (-1.0 if lam2 >= -lamn else 1.0)
        norm = np.linalg.norm(g)
        if norm == 0 or n <= 2:
            break
        w = np.maximum(w - 0.5 / np.sqrt(k) * g / norm, 0.0)
        load = np.bincount(np.concatenate([u, v]), np.concatenate([w, w]), minlength=n)
        w = w * np.minimum(1.0, 1.0 / np.maximum(np.maximum(load[u], load[v]), 1e-300))
    return dense(best_w)


MIXING: dict[str, tuple[Callable[..., Any], str]] = {
    "metropolis": (metropolis, "W_ij = 1/(1+max(d_i,d_j)) on edges (default)"),
    "max_degree": (max_degree, "W_ij = 1/(1+d_max) on edges"),
    "laplacian": (laplacian, "W = I - a L, a = 1/(d_max+1) or param a"),
    "uniform_neighbour": (uniform_neighbour, "W_ij = 1/(d_i+1) on row i; not symmetric if irregular; "
                          "the rule of directed graphs (in-neighbours)"),
    "fastest_mixing": (fastest_mixing, "optimised edge weights (projected subgradient), n <= 500"),
}


def mixing_rules() -> list[str]:
    """Names of the mixing rules, sorted."""
    return sorted(MIXING)


def _rule(rule: str) -> Callable[..., Any]:
    if rule not in MIXING:
        raise TopologyError(unknown_name("mixing rule", rule, MIXING))
    return MIXING[rule][0]


DIRECTED_RULE = "uniform_neighbour"
"""The rule of directed graphs; `metropolis` (the default) gives way to it on them."""


def effective_rule(G: nx.Graph, rule: str = "metropolis") -> str:
    """The rule `mixing_matrix(G, rule)` applies: `rule`, except on a directed graph, where the
    default `metropolis` means `uniform_neighbour` (each node averages itself and the models it
    pulls, as the random_neighbors family prescribes).

    Raises:
        TopologyError: unknown rule, or a symmetric rule other than metropolis on a directed graph.
    """
    _rule(rule)
    if not G.is_directed() or rule == DIRECTED_RULE:
        return rule
    if rule == "metropolis":
        return DIRECTED_RULE
    name = G.graph.get("name", "this graph")
    raise TopologyError(f"mixing rule {rule!r} needs an undirected graph, but {name} is directed "
                        f"(each node averages the models it pulls): use {DIRECTED_RULE} "
                        "(metropolis, the default, means it on directed graphs)")


def _uniform_in(G: nx.DiGraph) -> sp.csr_matrix:
    """W_ij = 1 / (d_in(i) + 1) for each arc j -> i and j = i (row-stochastic)."""
    n = G.number_of_nodes()
    if set(G.nodes) != set(range(n)):
        raise TopologyError(f"graph nodes must be 0..{n - 1}; relabel with "
                            "networkx.convert_node_labels_to_integers")
    e = np.array([(a, b) for a, b in G.edges() if a != b], dtype=np.int64).reshape(-1, 2)
    src, dst = e[:, 0], e[:, 1]
    indeg = np.bincount(dst, minlength=n).astype(np.float64)
    return _assemble(n, dst, src, 1.0 / (indeg[dst] + 1.0))


def _apply(G: nx.Graph, rule: str, params: dict[str, Any]):
    if G.is_directed():
        effective_rule(G, rule)
        check_params(f"mixing rule {DIRECTED_RULE}", params, [])
        return _uniform_in(G)
    check_params(f"mixing rule {rule}", params, rule_params(rule))
    return _rule(rule)(*_edges(G), **params)


def rule_params(rule: str) -> list[str]:
    """The parameters a mixing rule takes (laplacian: a; fastest_mixing: iters).

    >>> rule_params("laplacian"), rule_params("metropolis")
    (['a'], [])
    """
    return [p for p in inspect.signature(_rule(rule)).parameters if p not in ("n", "u", "v", "deg")]


def mixing_matrix(G: nx.Graph, rule: str = "metropolis", **params: Any) -> np.ndarray:
    """The n x n float64 mixing matrix of G (row/column i = node i) under `rule`.

    Args:
        G: graph on nodes 0..n-1; directed (arc j -> i: i pulls x_j) only with
            uniform_neighbour or the default metropolis, which means it there.
        rule: one of `mixing_rules()`.
        **params: rule parameters (laplacian: a; fastest_mixing: iters).
    """
    W = _apply(G, rule, params)
    return np.asarray(W.toarray() if sp.issparse(W) else W, dtype=np.float64)


def mixing_matrix_sparse(G: nx.Graph, rule: str = "metropolis", **params: Any) -> sp.csr_matrix:
    """`mixing_matrix` as a scipy.sparse CSR matrix (O(n + edges) memory, for large n)."""
    W = _apply(G, rule, params)
    return W if sp.issparse(W) else sp.csr_matrix(W)


DENSE_MAX_N = 4096
"""Largest graph whose W `mixing_matrix_auto` builds dense (4096^2 float64 = 128 MiB); above it W
is scipy sparse CSR (a dense W of 1e5 nodes would be 80 GB)."""


def mixing_matrix_auto(G: nx.Graph, rule: str = "metropolis", **params: Any):
    """`mixing_matrix` (numpy) up to DENSE_MAX_N nodes, `mixing_matrix_sparse` above: the one
    size rule every caller that builds W for a run or a report follows."""
    build = mixing_matrix if G.number_of_nodes() <= DENSE_MAX_N else mixing_matrix_sparse
    return build(G, rule, **params)
