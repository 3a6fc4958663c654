"""Spectra of mixing matrices and the consensus figures derived from them.

With W symmetric and doubly stochastic, eigenvalues 1 = lambda_1 >= lambda_2 >= ... >= lambda_n:

    spectral gap          gap = 1 - max(|lambda_2|, |lambda_n|)
    after Q gossip steps  gap_Q = 1 - (1 - gap)^Q                      (W^Q has gap gap_Q)
    contraction           ||W^Q X - X_bar|| <= (1 - gap)^Q ||X - X_bar||, so the consensus
                          distance Xi shrinks by (1 - gap)^(2Q) per round
    mixing time           steps to shrink ||X - X_bar|| by eps: ceil(log(1/eps) / -log(1 - gap))

Small W (n <= DENSE_MAX) use a dense eigvalsh. Large sparse W use scipy's eigsh in shift-invert
mode: lambda_1 = 1 is known, so the 2 eigenvalues nearest sigma = 1 + SHIFT are lambda_1 and
lambda_2, and the one nearest -1 - SHIFT is lambda_n. Shift-invert maps lambda to
1 / (lambda - sigma), so eigenvalues ~1e-7 apart near 1 (a 10,000-node ring) become well
separated and converge in a few iterations (plain Lanczos would need minutes); the absolute
error of lambda is about tol * |lambda - sigma|, so the gap comes with a small relative error.
Expanders (random regular, Erdos-Renyi) have large gaps but dense LU factors: there plain
Lanczos is used first (see `_extreme`).

A directed graph's W (random_neighbors: row-stochastic, not symmetric) has complex eigenvalues;
its gap is 1 - |lambda_2|, lambda_2 the second largest in modulus. Dense eigvals up to
DIRECTED_DENSE_MAX nodes; above, ARPACK (eigs, which="LM", 6 eigenvalues): the eigenvalues
besides 1 fill a disk (radius about (1 + sqrt(k)) / (k + 1) for k random in-neighbours), whose
edge it finds to about 1e-6.

>>> import numpy as np
>>> round(spectral_gap(np.full((4, 4), 0.25)), 12)   # W = J/n averages in one step
1.0
>>> round(effective_gap(0.1, 2), 6), mixing_time(0.5, eps=1e-3)
(0.19, 10)
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import reverse_cuthill_mckee

from .errors import TopologyError

DENSE_MAX = 1000
"""Sparse W up to this n are densified; above it, shift-invert eigsh is used."""
DENSE_INPUT_MAX = 3000
"""Dense (ndarray) W up to this n use eigvalsh; above it they are made sparse first."""
EIGVALS_MAX = 5000
"""Largest n for which the full spectrum is computed."""
SHIFT = 1e-9
"""Distance of the shift-invert poles from +1 and -1."""
DIRECTED_DENSE_MAX = 256
"""Structurally non-symmetric W (directed graphs) above this n use ARPACK, not a dense eigvals
(which takes seconds at n = 1000)."""


def _square(W) -> int:
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise TopologyError(f"W must be a non-empty square matrix, got shape {W.shape}")
    return W.shape[0]


def _is_symmetric(W, tol: float = 1e-12) -> bool:
    if sp.issparse(W):
        D = (W - W.T).tocoo()
        return D.nnz == 0 or float(abs(D.data).max()) <= tol
    return bool(np.allclose(W, W.T, rtol=0.0, atol=tol))


def eigenvalues(W) -> np.ndarray:
    """All eigenvalues of W (dense or sparse), sorted descending.

    Real for symmetric W (eigvalsh); for a non-symmetric W (uniform_neighbour on an irregular
    graph) from eigvals, real when the imaginary parts vanish (they do for that rule: it is a
    reversible chain), else complex sorted by descending real part. Not computed above
    EIGVALS_MAX nodes: `spectral_gap` handles large sparse W.
    """
    n = _square(W)
    if n > EIGVALS_MAX:
        raise TopologyError(f"full spectrum of n={n} > {EIGVALS_MAX} nodes not computed; "
                            "use spectral_gap(W)")
    A = W.toarray() if sp.issparse(W) else np.asarray(W, dtype=np.float64)
    if _is_symmetric(A):
        return np.linalg.eigvalsh(A)[::-1].copy()
    vals = np.linalg.eigvals(A)
    if np.abs(vals.imag).max() <= 1e-9:
        vals = vals.real
    return vals[np.argsort(-vals.real, kind="stable")]


def _lanczos(A, side: int, k: int) -> float | None:
    """Plain (restarted) Lanczos for the eigenvalue at the top (side=+1) or bottom (-1) end;
    the k-th from that end, or None if it does not converge in a few hundred restarts."""
    solve = spla.eigsh if _is_symmetric(A) else spla.eigs
    which = ("LA" if side > 0 else "SA") if solve is spla.eigsh else ("LR" if side > 0 else "SR")
    v0 = np.random.default_rng(0).standard_normal(A.shape[0])
    try:
        vals = solve(A, k=k, which=which, tol=1e-10, v0=v0, ncv=min(A.shape[0] - 1, 24),
                     maxiter=100, return_eigenvectors=False).real
    except spla.ArpackNoConvergence:
        return None
    return float(vals.min() if side > 0 else vals.max())


def _shift_invert(A, side: int, k: int) -> float:
    """Shift-invert eigsh at sigma = side * (1 + SHIFT): the k-th eigenvalue nearest +-1."""
    solve = spla.eigsh if _is_symmetric(A) else spla.eigs
    v0 = np.random.default_rng(0).standard_normal(A.shape[0])
    vals = solve(A.tocsc(), k=k, sigma=side * (1.0 + SHIFT), which="LM", v0=v0,
                 ncv=min(A.shape[0] - 1, 24), return_eigenvectors=False).real
    return float(vals.min() if side > 0 else vals.max())


def _cheap_factor(A) -> bool:
    """True if an LU factor of A is cheap: n * bandwidth^2 <= 1e9 after reverse Cuthill-McKee
    (rings: bandwidth 2, a 100 x 100 torus: ~200; expanders: ~n)."""
    perm = reverse_cuthill_mckee(sp.csr_matrix(A), symmetric_mode=True)
    P = sp.csr_matrix(A)[perm][:, perm].tocoo()
    band = int(np.abs(P.row - P.col).max(initial=0))
    return A.shape[0] * band**2 <= 1e9


def _extreme(A, side: int) -> float:
    """lambda_2 (side=+1; lambda_1 = 1 is known, so 2 are asked for) or lambda_n (side=-1) of a
    large sparse W. Graphs with a cheap LU factor (rings, tori, grids: small gaps) go to
    shift-invert first; others (expanders: large gaps, dense LU factors) to plain Lanczos
    first; Lanczos falls back on shift-invert if it does not converge."""
    k = 2 if side > 0 else 1
    if _cheap_factor(A):
        return _shift_invert(A, side, k)
    val = _lanczos(A, side, k)
    return _shift_invert(A, side, k) if val is None else val


def _dense_extremes(W) -> tuple[float, float]:
    vals = eigenvalues(W)
    rest = np.delete(vals, np.argmin(np.abs(vals - 1.0)))  # drop lambda_1 = 1
    if np.iscomplexobj(rest):
        return float(np.abs(rest).max()), float(rest.real.min())
    return float(rest.max()), float(rest.min())


def _directed(W) -> bool:
    """True if W's pattern of non-zeros is not symmetric (W_ij != 0 but W_ji == 0 somewhere)."""
    P = sp.csr_matrix(W, dtype=np.float64) != 0
    return (P != P.T).nnz > 0


def _slem_arpack(W) -> float:
    """|lambda_2| of a large non-symmetric W: the 6 eigenvalues of largest modulus by ARPACK, the
    one nearest 1 dropped (partial results are used if it stops early)."""
    A = sp.csr_matrix(W, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(A.shape[0])
    try:
        vals = spla.eigs(A, k=min(6, A.shape[0] - 2), which="LM", tol=1e-6, v0=v0,
                         ncv=min(A.shape[0] - 1, 40), maxiter=1000, return_eigenvectors=False)
    except spla.ArpackNoConvergence as exc:
        vals = exc.eigenvalues
    vals = np.delete(vals, np.argmin(np.abs(vals - 1.0)))
    return float(np.abs(vals).max(initial=0.0))


def second_largest_modulus(W) -> float:
    """max(|lambda_2|, |lambda_n|) of W, dense or sparse (the per-step consensus contraction).

    Complex eigenvalues (directed graphs) count by modulus: the result is |lambda_2|.
    Large sparse W: lambda_2 as in `_extreme`; lambda_n only when the Gershgorin bound
    lambda_n >= min_i (2 W_ii - 1) does not already show |lambda_n| <= lambda_2 (it does for
    Metropolis on rings: lambda_n >= -1/3), since its neighbourhood is often a tight cluster.
    """
    n = _square(W)
    if n == 1:
        return 0.0
    if n > DIRECTED_DENSE_MAX and _directed(W):
        return _slem_arpack(W)
    if n <= DENSE_MAX or (not sp.issparse(W) and n <= DENSE_INPUT_MAX):
        lam2, lamn = _dense_extremes(W)
        return max(abs(lam2), abs(lamn))
    A = sp.csr_matrix(W, dtype=np.float64)
    lam2 = _extreme(A, +1)
    lower = float((2.0 * A.diagonal() - 1.0).min())
    if -lower <= abs(lam2):
        return abs(lam2)
    return max(abs(lam2), abs(_extreme(A, -1)))


def spectral_gap(W) -> float:
    """1 - max(|lambda_2|, |lambda_n|) of W (dense ndarray or scipy.sparse), in [0, 1]; for a
    non-symmetric W with complex eigenvalues, 1 - |lambda_2| (second largest modulus).

    >>> import networkx as nx
    >>> from topologies.mixing import mixing_matrix
    >>> round(spectral_gap(mixing_matrix(nx.cycle_graph(4))), 6)   # 1 - (1/3 + 2/3 cos(pi/2))
    0.666667
    """
    return float(min(1.0, max(0.0, 1.0 - second_largest_modulus(W))))


def _check_gap(gap: float) -> float:
    if isinstance(gap, bool) or not isinstance(gap, (int, float, np.floating)) or not 0 <= gap <= 1:
        raise TopologyError(f"spectral gap must be in [0, 1], got {gap!r}")
    return float(gap)


def _check_q(q: int) -> int:
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
        raise TopologyError(f"gossip steps q must be an integer >= 1, got {q!r}")
    return int(q)


def contraction_factor(gap: float, q: int = 1) -> float:
    """(1 - gap)^q: the factor by which q gossip steps shrink ||X - X_bar|| (at most)."""
    return float((1.0 - _check_gap(gap)) ** _check_q(q))


def consensus_contraction(gap: float, q: int = 1) -> float:
    """(1 - gap)^(2q): the factor by which q gossip steps shrink the consensus distance Xi."""
    return contraction_factor(gap, q) ** 2


def effective_gap(gap: float, q: int = 1) -> float:
    """1 - (1 - gap)^q, the spectral gap of W^q (computed without cancellation for tiny gaps)."""
    gap, q = _check_gap(gap), _check_q(q)
    return 1.0 if gap == 1.0 else float(-math.expm1(q * math.log1p(-gap)))


def mixing_time(gap: float, eps: float = 1e-3) -> float:
    """Gossip steps to shrink ||X - X_bar|| by a factor eps: ceil(log(1/eps) / -log(1 - gap)).

    Returns math.inf when gap = 0 (no mixing) and 1 when gap = 1.
    """
    gap = _check_gap(gap)
    if not 0 < eps < 1:
        raise TopologyError(f"eps must be in (0, 1), got {eps!r}")
    if gap == 0.0:
        return math.inf
    if gap == 1.0:
        return 1
    return max(1, math.ceil(math.log(1.0 / eps) / -math.log1p(-gap) - 1e-9))
