"""topologies: mixing rules (properties for every graph x rule), spectra, describe, plot."""
from __future__ import annotations

import math
import time
import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import topologies as T
from topologies import TopologyError

N = 16
# random_neighbors is directed (symmetric rules refused): tests/test_topologies_random_neighbors.py
GRAPHS = [name for name in T.names() if name not in ("from_edgelist", "random_neighbors")]
RULES = T.mixing_rules()


def w_of(G, rule, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return T.mixing_matrix(G, rule, **params)


def is_regular(G):
    return len({d for _, d in G.degree()}) == 1


def check_mixing(G, W, rule):
    n = G.number_of_nodes()
    assert isinstance(W, np.ndarray) and W.shape == (n, n) and W.dtype == np.float64
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    assert W.min() >= -1e-12
    off_edge = np.ones((n, n), dtype=bool)
    np.fill_diagonal(off_edge, False)
    for a, b in G.edges:
        off_edge[a, b] = off_edge[b, a] = False
    assert np.all(W[off_edge] == 0.0)
    if rule != "uniform_neighbour" or is_regular(G):
        np.testing.assert_allclose(W, W.T, atol=1e-12)
        np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", GRAPHS)
def test_every_graph_every_rule(name, rule):
    G = T.build(name, N, seed=1)
    W = w_of(G, rule)
    check_mixing(G, W, rule)
    if not T.is_time_varying(name):  # connected: W mixes
        assert 0 < T.spectral_gap(W) <= 1


@pytest.mark.parametrize("rule", [r for r in RULES if r != "fastest_mixing"])
@pytest.mark.parametrize("name", ["ring", "star", "erdos_renyi", "random_matching"])
def test_sparse_equals_dense(name, rule):
    G = T.build(name, 12, seed=2)
    S = T.mixing_matrix_sparse(G, rule) if rule != "uniform_neighbour" else None
    if S is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            S = T.mixing_matrix_sparse(G, rule)
    assert sp.isspmatrix_csr(S) or isinstance(S, sp.csr_array)
    np.testing.assert_array_equal(S.toarray(), w_of(G, rule))


def test_metropolis_formula_on_a_path():
    W = T.mixing_matrix(nx.path_graph(4))  # degrees 1 2 2 1
    third = 1 / 3
    expected = [[1 - third, third, 0, 0], [third, third, third, 0],
                [0, third, third, third], [0, 0, third, 1 - third]]
    np.testing.assert_allclose(W, expected)


def test_max_degree_and_laplacian():
    G = T.build("star", 5)  # d_max = 4
    W = T.mixing_matrix(G, "max_degree")
    assert W[0, 1] == pytest.approx(0.2) and W[0, 0] == pytest.approx(0.2) and W[1, 1] == pytest.approx(0.8)
    np.testing.assert_array_equal(T.mixing_matrix(G, "laplacian"), W)  # default a = 1/(d_max+1)
    L = nx.laplacian_matrix(G).toarray()
    np.testing.assert_allclose(T.mixing_matrix(G, "laplacian", a=0.25), np.eye(5) - 0.25 * L)
    bad_a = r"laplacian: a must be in \(0, 1/max_degree\] = \(0, 0.25\], got 0.3"
    with pytest.raises(TopologyError, match=bad_a):
        T.mixing_matrix(G, "laplacian", a=0.3)
    with pytest.raises(TopologyError, match="mixing rule metropolis takes no params; got a=0.3"):
        T.mixing_matrix(G, "metropolis", a=0.3)


def test_uniform_neighbour_warns_only_on_irregular_graphs():
    with pytest.warns(UserWarning, match="not symmetric nor doubly stochastic"):
        W = T.mixing_matrix(T.build("star", 5), "uniform_neighbour")
    assert W[1, 0] == W[1, 1] == 0.5 and W[0, 3] == pytest.approx(0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W = T.mixing_matrix(T.build("ring", 6), "uniform_neighbour")
    np.testing.assert_allclose(W, T.mixing_matrix(T.build("ring", 6)))


def test_fastest_mixing_beats_metropolis_and_nears_ring_optimum():
    for name in ("ring", "star", "erdos_renyi", "grid"):
        G = T.build(name, 12, seed=0)
        fastest = T.spectral_gap(T.mixing_matrix(G, "fastest_mixing"))
        assert fastest >= T.spectral_gap(T.mixing_matrix(G)) - 1e-12
    n = 12  # ring optimum (equal weights w = 1/(3 - cos(2 pi/n))): gap 2 - 4w for even n
    best = 2 - 4 / (3 - math.cos(2 * math.pi / n))
    assert T.spectral_gap(T.mixing_matrix(T.build("ring", n), "fastest_mixing")) > 0.98 * best
    with pytest.raises(TopologyError, match="fastest_mixing: n must be <= 500"):
        T.mixing_matrix(T.build("ring", 501), "fastest_mixing")


def test_mixing_rejects_bad_graphs():
    with pytest.raises(TopologyError, match="'max_degree' needs an undirected graph"):
        T.mixing_matrix(nx.DiGraph([(0, 1)]), "max_degree")  # directed: uniform_neighbour only
    np.testing.assert_allclose(T.mixing_matrix(nx.DiGraph([(0, 1)])), [[1, 0], [0.5, 0.5]])
    with pytest.raises(TopologyError, match=r"nodes must be 0\.\.1"):
        T.mixing_matrix(nx.Graph([("a", "b")]))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 30), p=st.floats(0.2, 1.0), seed=st.integers(0, 1000),
       rule=st.sampled_from([r for r in RULES if r != "fastest_mixing"]))
def test_random_graph_mixing_properties(n, p, seed, rule):
    G = T.build("erdos_renyi", n, seed=seed, p=p)
    W = w_of(G, rule)
    check_mixing(G, W, rule)
    assert 0 < T.spectral_gap(W) <= 1 + 1e-12


# ---------------------------------------------------------------- spectra


@pytest.mark.parametrize("n", [5, 8, 13, 64])
def test_metropolis_ring_spectrum(n):
    vals = T.eigenvalues(T.mixing_matrix(T.build("ring", n)))
    expected = np.sort(1 / 3 + 2 / 3 * np.cos(2 * np.pi * np.arange(n) / n))[::-1]
    np.testing.assert_allclose(vals, expected, atol=1e-12)
    slem = max(abs(expected[1]), abs(expected[-1]))
    assert T.spectral_gap(T.mixing_matrix(T.build("ring", n))) == pytest.approx(1 - slem, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_complete_graph_averages_in_one_step(n):
    W = T.mixing_matrix(T.build("complete", n))
    np.testing.assert_allclose(W, np.full((n, n), 1 / n), atol=1e-15)
    assert T.spectral_gap(W) == pytest.approx(1.0, abs=1e-12)
    assert T.mixing_time(T.spectral_gap(W)) == 1


def test_eigenvalues_of_nonsymmetric_w_are_real():
    with pytest.warns(UserWarning):
        W = T.mixing_matrix(T.build("star", 6), "uniform_neighbour")
    vals = T.eigenvalues(W)
    assert vals.dtype == np.float64 and vals[0] == pytest.approx(1.0)
    assert T.spectral_gap(W) == pytest.approx(1 - max(abs(vals[1]), abs(vals[-1])))


@pytest.mark.parametrize("name", ["ring", "torus", "small_world", "random_regular", "star"])
def test_sparse_shift_invert_agrees_with_dense(name, monkeypatch):
    import topologies.spectra as S

    W = T.mixing_matrix_sparse(T.build(name, 200, seed=0))
    dense_gap = T.spectral_gap(W.toarray())
    monkeypatch.setattr(S, "DENSE_MAX", 10)  # force eigsh on the sparse W
    assert T.spectral_gap(W) == pytest.approx(dense_gap, rel=1e-7, abs=1e-12)
    for side in (+1, -1):  # both eigsh strategies, on both ends
        k = 2 if side > 0 else 1
        vals = np.linalg.eigvalsh(W.toarray())
        want = vals[-2] if side > 0 else vals[0]
        assert S._shift_invert(W, side, k) == pytest.approx(want, abs=1e-9)
        got = S._lanczos(W, side, k)
        assert got is None or got == pytest.approx(want, abs=1e-8)


def test_ring_10000_gap_in_seconds():
    n = 10_000
    start = time.perf_counter()
    W = T.mixing_matrix_sparse(T.build("ring", n))
    gap = T.spectral_gap(W)
    elapsed = time.perf_counter() - start
    # even n: lambda_n = 1/3 - 2/3 = -1/3, so max |lambda| is lambda_2 = 1/3 + 2/3 cos(2 pi/n)
    exact = 4 / 3 * math.sin(math.pi / n) ** 2  # = 1 - lambda_2, without cancellation
    assert gap == pytest.approx(exact, rel=1e-6)
    assert elapsed < 5.0


def test_effective_gap_contraction_and_mixing_time():
    assert T.effective_gap(0.1, 1) == pytest.approx(0.1)
    assert T.effective_gap(0.1, 3) == pytest.approx(1 - 0.9**3)
    assert T.effective_gap(1e-12, 2) == pytest.approx(2e-12, rel=1e-9)  # no cancellation
    assert T.effective_gap(1.0, 4) == 1.0 and T.effective_gap(0.0, 4) == 0.0
    assert T.contraction_factor(0.2, 2) == pytest.approx(0.64)
    assert T.consensus_contraction(0.2, 2) == pytest.approx(0.64**2)  # Xi shrinks by (1-gap)^(2Q)
    assert T.mixing_time(0.5, eps=1e-3) == 10  # 2^-10 < 1e-3 < 2^-9
    assert T.mixing_time(0.0) == math.inf and T.mixing_time(1.0) == 1
    gap = 0.05
    steps = T.mixing_time(gap, eps=1e-2)
    assert (1 - gap) ** steps <= 1e-2 < (1 - gap) ** (steps - 1)
    with pytest.raises(TopologyError, match=r"spectral gap must be in \[0, 1\], got 1.5"):
        T.effective_gap(1.5, 1)
    with pytest.raises(TopologyError, match="gossip steps q must be an integer >= 1, got 0"):
        T.effective_gap(0.5, 0)
    with pytest.raises(TopologyError, match=r"eps must be in \(0, 1\)"):
        T.mixing_time(0.5, eps=2)


def test_gossip_contracts_consensus_as_predicted():
    G = T.build("torus", 16)
    W = T.mixing_matrix(G)
    gap, q = T.spectral_gap(W), 3
    X = np.random.default_rng(0).standard_normal((16, 5))
    xi = lambda Y: ((Y - Y.mean(0)) ** 2).sum(1).mean()  # noqa: E731
    Y = np.linalg.matrix_power(W, q) @ X
    assert xi(Y) <= T.consensus_contraction(gap, q) * xi(X) + 1e-12
    np.testing.assert_allclose(Y.mean(0), X.mean(0))


def test_disconnected_w_has_zero_gap():
    G = nx.Graph([(0, 1), (2, 3)])
    assert T.spectral_gap(T.mixing_matrix(G)) == 0.0


# ---------------------------------------------------------------- describe, plot


def test_describe_static():
    d = T.describe("ring", 12, q=2)
    assert (d["nodes"], d["edges"], d["degree_min"], d["degree_max"], d["diameter"]) == (12, 12, 2, 2, 6)
    gap = 1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / 12))
    assert d["spectral_gap"] == pytest.approx(gap)
    assert d["effective_gap"] == pytest.approx(1 - (1 - gap) ** 2)
    assert d["messages_per_round"] == 2 * 12 * 2
    assert d["mixing_rounds"] == math.ceil(d["mixing_time"] / 2)
    assert not d["time_varying"] and d["note"] is None


def test_describe_time_varying_and_large():
    d = T.describe("one_peer_exponential", 16)
    assert d["time_varying"] and "round 0" in d["note"]
    assert d["edges"] == 8 and d["period"] == 4 and d["period_gap"] == pytest.approx(1.0)
    big = T.describe("ring", 3000)
    assert big["diameter"] is None
    assert big["spectral_gap"] == pytest.approx(4 / 3 * math.sin(math.pi / 3000) ** 2, rel=1e-6)


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_plot_writes_file(tmp_path, ext):
    G = T.build("ring", 10)
    out = T.plot(G, T.mixing_matrix(G), tmp_path / f"ring.{ext}", q=2)
    assert out.exists() and out.stat().st_size > 1000


def test_plot_rejects_unknown_format(tmp_path):
    G = T.build("ring", 5)
    with pytest.raises(TopologyError, match=r"\.png, \.pdf or \.svg"):
        T.plot(G, T.mixing_matrix(G), tmp_path / "x.jpg")
