"""topologies: random_neighbors (DisPFL / DFedSAM "random"): structure, seeding, closed forms,
`dfl topo`, and a run's degrees, bytes and engines."""
from __future__ import annotations

import argparse
import re

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

import topologies as T
from topologies import TopologyError
from topologies.random_neighbors import expected_gap, mean_square_factor, neighbours
from topologies.spectra import DIRECTED_DENSE_MAX


def seq(n=16, seed=0, **params):
    return T.build_sequence("random_neighbors", n, seed=seed, **params)


def w_fast(seed, t, n, k):
    """W_t straight from `neighbours` (no networkx graph): for Monte Carlo over many rounds."""
    W = np.eye(n)
    W[np.repeat(np.arange(n), k), neighbours(seed, t, np.arange(n), n, k).ravel()] = 1.0
    return W / (k + 1)


@pytest.mark.parametrize("n,k", [(2, 1), (6, 2), (16, 10), (30, 1), (9, 8)])
def test_each_row_averages_itself_and_k_distinct_others(n, k):
    s = seq(n, seed=3, k=k)
    for t in range(4):
        G = s.graph(t)
        assert isinstance(G, nx.DiGraph) and sorted(G.nodes) == list(range(n))
        assert nx.number_of_selfloops(G) == 0 and G.number_of_edges() == n * k
        assert all(d == k for _, d in G.in_degree())
        W = T.mixing_matrix(G)  # the default metropolis means uniform_neighbour on a DiGraph
        np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
        assert ((W != 0).sum(axis=1) == k + 1).all()
        np.testing.assert_allclose(np.diag(W), 1 / (k + 1))
        np.testing.assert_allclose(W[W != 0], 1 / (k + 1))
        pulls = {(j, i) for i in range(n) for j in np.flatnonzero(W[i]) if j != i}
        assert pulls == set(G.edges)  # W_ij > 0 exactly on the arcs j -> i
        np.testing.assert_array_equal(T.mixing_matrix_sparse(G).toarray(), W)
        np.testing.assert_array_equal(s.mixing(t), W)


def test_not_symmetric_not_doubly_stochastic():
    W = seq(16, k=3).mixing(0)
    assert not np.allclose(W, W.T) and not np.allclose(W.sum(axis=0), 1.0)


def test_neighbours_are_distinct_others_and_a_row_depends_only_on_seed_round_client():
    n, k = 25, 7
    full = neighbours(4, 11, np.arange(n), n, k)
    assert full.shape == (n, k) and full.dtype == np.int64
    for i in range(n):
        row = full[i]
        assert len(set(row.tolist())) == k and i not in row and row.min() >= 0 and row.max() < n
        assert (np.diff(row) > 0).all()
        np.testing.assert_array_equal(neighbours(4, 11, [i], n, k)[0], row)  # alone == with others
    np.testing.assert_array_equal(neighbours(4, 11, [20, 3], n, k), full[[20, 3]])  # any order


def test_seeding():
    a, b = seq(16, seed=5, k=4), seq(16, seed=5, k=4)
    for t in (0, 1, 7, 1000):
        np.testing.assert_array_equal(a.mixing(t), b.mixing(t))  # same (seed, round): same W
    assert not np.array_equal(a.mixing(0), a.mixing(1))  # another round: another W
    assert not np.array_equal(a.mixing(3), seq(16, seed=6, k=4).mixing(3))  # another seed
    np.testing.assert_array_equal(T.build("random_neighbors", 16, seed=5, k=4).edges, a.graph(0).edges)
    assert a.period is None and a.time_varying and T.is_time_varying("random_neighbors")


def test_picks_are_uniform():
    n, k, rounds = 6, 2, 3000
    counts = np.zeros((n, n))
    for t in range(rounds):
        nb = neighbours(1, t, np.arange(n), n, k)
        np.add.at(counts, (np.repeat(np.arange(n), k), nb.ravel()), 1)
    p = k / (n - 1)
    sd = np.sqrt(rounds * p * (1 - p))
    off = ~np.eye(n, dtype=bool)
    assert np.abs(counts[off] - rounds * p).max() < 5 * sd and (np.diag(counts) == 0).all()


@pytest.mark.parametrize("n,k", [(6, 2), (16, 10), (40, 3)])
def test_expected_w_and_its_gap_closed_form(n, k):
    a, b = 1 / (k + 1), k / ((k + 1) * (n - 1))
    EW = a * np.eye(n) + b * (np.ones((n, n)) - np.eye(n))
    assert expected_gap(n, k) == pytest.approx(1 - abs(a - b), abs=1e-15)
    assert T.spectral_gap(EW) == pytest.approx(expected_gap(n, k), abs=1e-12)
    s = seq(n, seed=2, k=k)
    assert s.expected_gap == pytest.approx(expected_gap(n, k))
    np.testing.assert_allclose(w_fast(2, 5, n, k), s.mixing(5), atol=1e-15)
    mean = sum(w_fast(2, t, n, k) for t in range(2000)) / 2000
    np.testing.assert_allclose(mean, EW, atol=0.04)  # Monte Carlo: E[W_t]


def test_mean_square_factor_closed_form():
    n, k = 8, 3
    P = np.eye(n) - 1 / n
    s = seq(n, seed=9, k=k)
    M = sum(w_fast(9, t, n, k).T @ P @ w_fast(9, t, n, k) for t in range(4000)) / 4000
    assert np.trace(M) / (n - 1) == pytest.approx(mean_square_factor(n, k), rel=0.02)
    assert mean_square_factor(n, n - 1) == 0.0 and expected_gap(n, n - 1) == pytest.approx(1.0)
    np.testing.assert_allclose(seq(n, k=n - 1).mixing(0), np.full((n, n), 1 / n))  # W = J/n
    alpha = mean_square_factor(n, k)
    assert T.period_gap(s, q=1) == pytest.approx(1 - alpha ** 0.5)
    assert T.period_gap(s, q=3) == pytest.approx(1 - alpha ** 1.5)


def test_spectral_gap_is_one_minus_second_largest_modulus():
    W = seq(16, k=3).mixing(0)
    mods = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    assert mods[0] == pytest.approx(1.0)
    assert T.spectral_gap(W) == pytest.approx(1 - mods[1], abs=1e-10)
    n = DIRECTED_DENSE_MAX + 44  # ARPACK path for large directed W
    W = seq(n, k=10).mixing(0)
    mods = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    assert T.spectral_gap(sp.csr_matrix(W)) == pytest.approx(1 - mods[1], abs=1e-5)
    assert T.spectral_gap(W) == pytest.approx(1 - mods[1], abs=1e-5)


def test_default_k_and_user_errors():
    assert seq(16).graph(0).graph["k"] == 10 and seq(5).graph(0).graph["k"] == 4  # min(10, n-1)
    for bad in (0, 16, 2.5, "3", True):
        with pytest.raises(TopologyError, match=re.escape(
                f"random_neighbors: k must be an integer in [1, 15], got {bad!r}")):
            seq(16, k=bad)
    with pytest.raises(TopologyError, match="random_neighbors needs n >= 2, got n=1"):
        seq(1)
    with pytest.raises(TopologyError, match="seed must be an integer >= 0, got -1"):
        seq(8, seed=-1)
    with pytest.raises(TopologyError, match="takes params k; got d=3"):
        seq(8, d=3)
    G = seq(8, k=2).graph(0)
    assert T.effective_rule(G, "metropolis") == T.effective_rule(G, "uniform_neighbour") == "uniform_neighbour"
    for rule in ("max_degree", "laplacian", "fastest_mixing"):
        with pytest.raises(TopologyError, match=f"mixing rule '{rule}' needs an undirected graph, but "
                                                "random_neighbors is directed"):
            T.mixing_matrix(G, rule)
    with pytest.raises(TopologyError, match="unknown mixing rule"):
        T.mixing_matrix(G, "metropolis_hastings")


@pytest.mark.parametrize("q", [1, 2])
def test_describe(q):
    n, k = 12, 3
    d = T.describe("random_neighbors", n, q=q, k=k)
    assert d["directed"] and d["time_varying"] and d["mixing"] == "uniform_neighbour"
    assert (d["nodes"], d["edges"], d["degree_min"], d["degree_max"]) == (n, n * k, k, k)
    assert d["messages_per_round"] == n * k * q  # one model per arc and gossip step
    assert d["period"] is None and d["expected_gap"] == pytest.approx(expected_gap(n, k))
    assert d["period_gap"] == pytest.approx(1 - mean_square_factor(n, k) ** (q / 2))
    assert d["spectral_gap"] == pytest.approx(T.spectral_gap(seq(n, k=k).mixing(0)))
    assert "round 0 shown" in d["note"] and "metropolis means uniform_neighbour" in d["note"]


def parse(*argv: str) -> argparse.Namespace:
    from dfl.commands import topo

    parser = argparse.ArgumentParser(prog="dfl")
    topo.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["topo", *argv])


def test_dfl_topo_table_and_plot(tmp_path, capsys):
    from dfl.commands import topo

    out = tmp_path / "rn.png"
    assert topo.run(parse("random_neighbors", "--n", "12", "--param", "k=3", "--gossip-steps", "2",
                          "--plot", str(out))) == 0
    text = capsys.readouterr().out
    assert "random_neighbors: n=12, mixing uniform_neighbour, Q=2" in text
    for label in ("arcs (directed: i pulls j)", "in-degree (min..max)", "3..3", "messages per round (arcs * Q)",
                  "72", "none (random)", "gap of the expected W", f"{expected_gap(12, 3):.6g}",
                  "mean-square gap", "round 0 shown"):
        assert label in text, label
    assert out.exists() and out.stat().st_size > 1000
    assert topo.run(parse("--list")) == 0
    assert "random_neighbors" in capsys.readouterr().out


def test_dfl_topo_errors_exit_2(capsys):
    from tests.helpers import assert_user_error

    assert assert_user_error(["topo", "random_neighbors", "--n", "8", "--param", "k=8"], capsys) == (
        "dfl: error: random_neighbors: k must be an integer in [1, 7], got 8")
    assert_user_error(["topo", "random_neighbors", "--mixing", "laplacian"], capsys, "needs an undirected graph")


def test_run_uses_in_degrees_for_the_bytes_and_engines_agree():
    from dfl.simulation import Simulation
    from tests.helpers import assert_same_history, training_config

    n, k, q = 6, 2, 2
    common = {"topology.name": "random_neighbors", "topology.k": k, "algorithm.gossip_steps": q,
              "algorithm.name": "dfedsam", "local.optimizer": "sam"}
    sim = Simulation(training_config(**common))
    for t in range(3):
        rg = sim.mixing(t)
        W, deg, gap = rg.operator, rg.degrees, rg.gap
        np.testing.assert_array_equal(deg, np.full(n, k))  # each client receives k models
        want = T.build_sequence("random_neighbors", n, seed=sim.cfg.seed, k=k).mixing(t)
        np.testing.assert_allclose(W.to_dense().cpu().numpy(), want, atol=1e-7)
        assert gap == pytest.approx(T.spectral_gap(want))
    vec = sim.run()
    mb = sim.model_bytes * q * n * k / 1e6  # Q * k models per client per round
    assert [r["comm_mb"] for r in vec] == pytest.approx([mb * (i + 1) for i in range(len(vec))])
    assert all(r["period_gap"] == pytest.approx(1 - mean_square_factor(n, k) ** (q / 2)) for r in vec)
    ser = Simulation(training_config(**common, **{"engine.backend": "serial"})).run()
    assert_same_history(vec, ser, tol=1e-6, keys=("test_acc", "test_loss", "local_test_acc", "train_loss",
                                                 "consensus", "spectral_gap", "comm_mb"))
