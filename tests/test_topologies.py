"""topologies: graph generators, time-varying sequences, validation errors."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import topologies as T
from topologies import TopologyError

STATIC = T.names(time_varying=False)
TIME_VARYING = T.names(time_varying=True)
# n that every family accepts, and params where the default does not fit that n
N = 16
PARAMS = {"from_edgelist": None}  # needs a file: built with the `edgelist` fixture


@pytest.fixture
def edgelist(tmp_path):
    path = tmp_path / "edges.txt"
    lines = ["# a ring of 16 plus two chords"] + [f"{i} {(i + 1) % N}" for i in range(N)] + ["0 8", "3 11"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def make(name: str, edgelist: str, n: int = N, seed: int = 0) -> nx.Graph:
    params = {"path": edgelist} if name == "from_edgelist" else {}
    return T.build(name, n, seed=seed, **params)


def test_names_and_contract():
    assert set(STATIC) >= {"ring", "torus", "grid", "exponential", "complete", "star", "erdos_renyi",
                           "small_world", "random_regular", "from_edgelist"}
    assert set(TIME_VARYING) == {"one_peer_exponential", "random_matching", "random_neighbors"}
    assert T.names() == sorted(STATIC + TIME_VARYING)
    assert all(T.is_time_varying(name) for name in TIME_VARYING)
    assert not any(T.is_time_varying(name) for name in STATIC)
    G = T.build("ring", 8)
    assert isinstance(G, nx.Graph) and sorted(G.nodes) == list(range(8))


@pytest.mark.parametrize("name", STATIC)
def test_every_static_graph_connected_on_0_to_n(name, edgelist):
    G = make(name, edgelist)
    assert sorted(G.nodes) == list(range(N))
    assert nx.is_connected(G)
    assert nx.number_of_selfloops(G) == 0


@pytest.mark.parametrize("name", STATIC)
def test_deterministic_per_seed(name, edgelist):
    a, b = make(name, edgelist, seed=3), make(name, edgelist, seed=3)
    assert sorted(a.edges) == sorted(b.edges)


@pytest.mark.parametrize("name", ["erdos_renyi", "small_world", "random_regular"])
def test_random_graphs_change_with_seed(name):
    edges = {tuple(sorted(T.build(name, 20, seed=s).edges)) for s in range(4)}
    assert len(edges) > 1


def test_structure_of_regular_families():
    ring = T.build("ring", 10)
    assert ring.number_of_edges() == 10 and {d for _, d in ring.degree()} == {2}
    torus = T.build("torus", 12)
    assert (torus.graph["rows"], torus.graph["cols"]) == (3, 4)
    assert torus.number_of_edges() == 24 and {d for _, d in torus.degree()} == {4}
    assert {d for _, d in T.build("torus", 15, cols=5).degree()} == {4}
    grid = T.build("grid", 12)
    assert grid.number_of_edges() == 3 * 3 + 2 * 4  # rows*(cols-1) + (rows-1)*cols
    assert sorted({d for _, d in grid.degree()}) == [2, 3, 4]
    assert T.build("complete", 7).number_of_edges() == 21
    star = T.build("star", 9)
    assert star.degree(0) == 8 and star.number_of_edges() == 8
    for d in (3, 4, 5):
        G = T.build("random_regular", 12, d=d)
        assert {deg for _, deg in G.degree()} == {d}
    sw = T.build("small_world", 20, k=4, p=0.0)
    assert {d for _, d in sw.degree()} == {4} and sw.number_of_edges() == 40


@pytest.mark.parametrize("n", [2, 3, 5, 8, 10, 16, 32, 33])
def test_exponential_graph_neighbours(n):
    G = T.build("exponential", n)
    hops = [2**k for k in range(max(1, math.ceil(math.log2(n))))]
    for i in range(n):
        assert set(G[i]) == {(i + s * h) % n for h in hops for s in (1, -1)} - {i}
    if n & (n - 1) == 0 and n > 2:  # power of two: degree 2 log2 n - 1
        assert {d for _, d in G.degree()} == {2 * int(math.log2(n)) - 1}


def test_erdos_renyi_redrawn_until_connected():
    for seed in range(5):
        assert nx.is_connected(T.build("erdos_renyi", 30, seed=seed, p=0.12))


def test_from_edgelist(edgelist, tmp_path):
    G = T.build("from_edgelist", N, path=edgelist)
    assert G.number_of_edges() == N + 2 and G.has_edge(0, 8)
    with pytest.raises(TopologyError, match=r"has 16 nodes but n=20"):
        T.build("from_edgelist", 20, path=edgelist)
    with pytest.raises(TopologyError, match="no such file"):
        T.build("from_edgelist", 4, path=str(tmp_path / "missing.txt"))
    with pytest.raises(TopologyError, match="path is required"):
        T.build("from_edgelist", 4)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1\n1 2\n2 7\n")
    with pytest.raises(TopologyError, match=r"nodes must be 0\.\.3, found \[7\]"):
        T.build("from_edgelist", 4, path=str(bad))
    split = tmp_path / "split.txt"
    split.write_text("0 1\n1 2\n3 4\n")
    with pytest.raises(TopologyError, match="disconnected"):
        T.build("from_edgelist", 5, path=str(split))
    assert T.build("from_edgelist", 5, path=str(split), allow_disconnected=True).number_of_nodes() == 5


# ---------------------------------------------------------------- errors


def test_disconnected_graph_names_components(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("0 1\n1 2\n3 4\n")
    with pytest.raises(TopologyError) as err:
        T.build("from_edgelist", 5, path=str(path))
    assert str(err.value).startswith("graph is disconnected: 2 components ({0, 1, 2}, {3, 4})")
    assert "allow_disconnected=True" in str(err.value)


def test_disconnected_message_truncated_for_big_graphs():
    G = nx.Graph()
    G.add_edges_from((i, i + 1) for i in range(0, 100, 2))  # 50 components of 2 ...
    G.add_edges_from((100 + i, 101 + i) for i in range(30))  # ... and one of 31
    with pytest.raises(TopologyError) as err:
        T.check_connected(G)
    msg = str(err.value)
    assert "51 components" in msg and "... and 47 more" in msg and "(+23)" in msg
    assert len(msg) < 300 and "\n" not in msg


@pytest.mark.parametrize("name, n, allowed", [
    ("ring", 2, "n >= 3"), ("torus", 4, "n >= 9"), ("complete", 1, "n >= 2"),
    ("small_world", 2, "n >= 3"), ("one_peer_exponential", 1, "n >= 2"),
])
def test_n_too_small(name, n, allowed):
    with pytest.raises(TopologyError, match=f"{name} needs {allowed}, got n={n}"):
        T.build(name, n)


def test_torus_shape_errors():
    with pytest.raises(TopologyError, match=r"n=13 has no factorisation .* >= 3; use e\.g\. n=12 or n=15"):
        T.build("torus", 13)
    with pytest.raises(TopologyError, match="rows x cols must equal n=12"):
        T.build("torus", 12, rows=5)
    with pytest.raises(TopologyError, match="rows must be an integer >= 3, got 2"):
        T.build("torus", 12, rows=2)


def test_unknown_names():
    hint = r"unknown topology 'rign'; valid: .*ring.* \(did you mean 'ring'\?\)"
    with pytest.raises(TopologyError, match=hint):
        T.build("rign", 8)
    hint = r"unknown mixing rule 'metropolis_hastings'.*did you mean 'metropolis'"
    with pytest.raises(TopologyError, match=hint):
        T.mixing_matrix(T.build("ring", 8), "metropolis_hastings")
    with pytest.raises(TopologyError, match="unknown topology"):
        T.sequence_for("nope", 8)


@pytest.mark.parametrize("name, params, expected", [
    ("erdos_renyi", {"p": 0}, r"erdos_renyi: p must be in \(0, 1\], got 0"),
    ("erdos_renyi", {"p": 1.5}, r"p must be in \(0, 1\], got 1.5"),
    ("small_world", {"p": -0.1}, r"small_world: p must be in \[0, 1\], got -0.1"),
    ("small_world", {"k": 3}, r"k must be even"),
    ("small_world", {"k": 16}, r"k must be an integer in \[2, 15\], got 16"),
    ("random_regular", {"d": 16}, r"random_regular: d must be < n=16"),
    ("random_regular", {"d": 1}, r"d must be an integer >= 2, got 1"),
    ("random_regular", {"d": 2.5}, r"d must be an integer >= 2, got 2.5"),
    ("ring", {"p": 0.5}, r"ring takes no params; got p=0.5"),
    ("small_world", {"d": 3}, r"small_world takes params k, p; got d=3"),
])
def test_bad_params(name, params, expected):
    with pytest.raises(TopologyError, match=expected):
        T.build(name, N, **params)


def test_odd_degree_sum_and_bad_n():
    with pytest.raises(TopologyError, match=r"d must be such that d \* n is even \(n=15 is odd"):
        T.build("random_regular", 15, d=3)
    with pytest.raises(TopologyError, match="n must be an integer >= 3, got 8.5"):
        T.build("ring", 8.5)


def test_impossible_connectivity_is_reported():
    with pytest.raises(TopologyError, match=r"no connected graph in \d+ draws; increase p"):
        T.build("erdos_renyi", 200, p=0.001)


def test_errors_are_value_errors_on_one_line():
    with pytest.raises(ValueError):
        T.build("ring", 1)


# ---------------------------------------------------------------- time-varying


@pytest.mark.parametrize("n", [2, 4, 8, 16, 64])
def test_one_peer_exponential_rounds_are_perfect_matchings(n):
    seq = T.build_sequence("one_peer_exponential", n)
    tau = int(math.log2(n))
    assert seq.period == tau and seq.time_varying
    for t in range(2 * tau + 1):
        G = seq.graph(t)
        k = 2 ** (t % tau)
        assert {d for _, d in G.degree()} == {1}
        assert G.number_of_edges() == n // 2
        assert all(abs(a - b) == k for a, b in G.edges)
        assert all(G.has_edge(i, i + k) for i in range(n) if not i & k)
    union = nx.compose_all([seq.graph(t) for t in range(tau)])
    assert nx.is_connected(union) and {d for _, d in union.degree()} == {tau}  # the hypercube


@pytest.mark.parametrize("n", [4, 8, 16, 32])
def test_one_peer_exponential_exact_average_in_log2_n_rounds(n):
    seq = T.build_sequence("one_peer_exponential", n)
    P = np.eye(n)
    for t in range(int(math.log2(n))):
        P = seq.mixing(t) @ P
    np.testing.assert_allclose(P, np.full((n, n), 1.0 / n), atol=1e-14)


def test_one_peer_exponential_not_power_of_two():
    seq = T.build_sequence("one_peer_exponential", 6)
    assert seq.period == 3
    for t in range(3):
        assert max(d for _, d in seq.graph(t).degree()) == 1
    assert nx.is_connected(nx.compose_all([seq.graph(t) for t in range(3)]))


@pytest.mark.parametrize("n", [2, 7, 10, 31])
def test_random_matchings(n):
    seq = T.build_sequence("random_matching", n, seed=5)
    assert seq.period is None
    graphs = [seq.graph(t) for t in range(6)]
    for G in graphs:
        assert sorted(G.nodes) == list(range(n))
        assert G.number_of_edges() == n // 2 and max(d for _, d in G.degree()) == 1
    assert sorted(T.build_sequence("random_matching", n, seed=5).graph(3).edges) == sorted(graphs[3].edges)
    if n > 4:
        assert len({tuple(sorted(G.edges)) for G in graphs}) > 1
        other = T.build_sequence("random_matching", n, seed=6)
        assert any(sorted(other.graph(t).edges) != sorted(graphs[t].edges) for t in range(6))


def test_constant_sequence_for_static_names():
    seq = T.sequence_for("torus", 9, seed=0)
    assert not seq.time_varying and seq.period == 1
    assert seq.graph(0) is seq.graph(7)
    np.testing.assert_array_equal(seq.mixing(3), T.mixing_matrix(T.build("torus", 9)))
    assert T.build("one_peer_exponential", 8).number_of_edges() == 4  # build gives round 0
    with pytest.raises(TopologyError, match="round t must be an integer >= 0"):
        seq.graph(-1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 10_000), t=st.integers(0, 1000))
def test_matchings_property(n, seed, t):
    for name in ("one_peer_exponential", "random_matching"):  # random_neighbors: its own tests
        G = T.build_sequence(name, n, seed=seed).graph(t)
        assert sorted(G.nodes) == list(range(n)) and max(d for _, d in G.degree()) <= 1
        W = T.mixing_matrix(G)
        np.testing.assert_allclose(W, W.T)
        np.testing.assert_allclose(W.sum(axis=1), 1.0)


@pytest.mark.parametrize("module", ["topologies.errors", "topologies.generators", "topologies.timevarying",
                                    "topologies.random_neighbors", "topologies.catalog", "topologies.mixing", "topologies.spectra",
                                    "topologies.report", "dfl.commands.topo"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
