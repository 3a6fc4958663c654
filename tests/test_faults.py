"""Simulated faults: dropout, link failures, stragglers (counter-based draws, recorded per round)."""
import math

import networkx as nx
import numpy as np
import pytest
import torch

import topologies
from dfl.config import FaultsConfig
from dfl.faults import FaultModel, mean_loss
from dfl.simulation import Simulation

from tests.conftest import small_config
from tests.helpers import assert_same_history, training_config


def spy_train(sim):
    """Record (round, active, steps) of every engine.train call."""
    calls = []
    orig = sim.engine.train

    def train(bank, active, steps, lr, t, corr):
        calls.append((t, active.copy(), np.asarray(steps).copy(), bank.clone()))
        return orig(bank, active, steps, lr, t, corr)

    sim.engine.train = train
    return calls


# ---------------------------------------------------------------- the draws


def test_draws_depend_only_on_seed_round_and_client():
    fm = FaultModel(FaultsConfig(dropout=0.3, straggler=0.5), seed=7)
    assert np.array_equal(fm.dropped(4, 10), fm.dropped(4, 25)[:10])  # more clients: same prefix
    assert not np.array_equal(fm.dropped(4, 200), fm.dropped(5, 200))
    assert not np.array_equal(fm.dropped(4, 200), FaultModel(FaultsConfig(dropout=0.3), 8).dropped(4, 200))
    K = np.full(10, 8)
    assert np.array_equal(fm.local_steps(3, K), fm.local_steps(3, np.full(25, 8))[:10])


def test_dropout_rate_and_off_by_default():
    fm = FaultModel(FaultsConfig(dropout=0.25), seed=0)
    rate = np.mean([fm.dropped(t, 100).mean() for t in range(50)])
    assert rate == pytest.approx(0.25, abs=0.02)
    assert not FaultModel(FaultsConfig(), 0).dropped(0, 50).any()


def test_stragglers_do_ceil_u_k_steps():
    fm = FaultModel(FaultsConfig(straggler=0.4), seed=1)
    K = np.array([1, 5, 8, 20] * 250)
    steps = np.stack([fm.local_steps(t, K) for t in range(20)])
    assert (steps >= 1).all() and (steps <= K).all()
    short = steps < K
    assert short[:, K > 1].mean() == pytest.approx(0.4 * 0.9, abs=0.05)  # straggles and u*K < K
    u = fm._u(3, np.arange(len(K)), 2)
    slow = fm._u(3, np.arange(len(K)), 1) < 0.4
    expect = np.where(slow, np.maximum(1, np.ceil(u * K)), K)
    assert np.array_equal(fm.local_steps(3, K), expect)
    assert np.array_equal(FaultModel(FaultsConfig(), 0).local_steps(0, K), K)


def test_link_failures_do_not_depend_on_edge_order():
    G = nx.random_regular_graph(4, 40, seed=0)
    H = nx.Graph()
    H.add_nodes_from(range(40))
    H.add_edges_from(reversed([(b, a) for a, b in G.edges()]))
    fm = FaultModel(FaultsConfig(link_failure=0.3), seed=2)
    a, b = fm.surviving(G, 5), fm.surviving(H, 5)
    assert {frozenset(e) for e in a.edges()} == {frozenset(e) for e in b.edges()}
    assert set(map(frozenset, a.edges())) <= set(map(frozenset, G.edges()))
    assert a.number_of_nodes() == 40
    frac = np.mean([fm.surviving(G, t).number_of_edges() / G.number_of_edges() for t in range(40)])
    assert frac == pytest.approx(0.7, abs=0.03)
    assert fm.surviving(G, 5) is not G and FaultModel(FaultsConfig(), 0).surviving(G, 5) is G


def test_surviving_graph_keeps_metropolis_doubly_stochastic_even_disconnected():
    fm = FaultModel(FaultsConfig(link_failure=0.6), seed=0)
    G = topologies.build("ring", 8)
    H = next(fm.surviving(G, t) for t in range(50) if not nx.is_connected(fm.surviving(G, t)))
    W = topologies.mixing_matrix(H, "metropolis")
    assert np.allclose(W.sum(0), 1) and np.allclose(W.sum(1), 1) and np.allclose(W, W.T)
    assert topologies.spectral_gap(W) == pytest.approx(0.0, abs=1e-9)


def test_mean_loss_of_nobody_is_nan_without_warning():
    with np.testing.assert_no_warnings():
        assert math.isnan(mean_loss(np.full(3, np.nan)))
    assert mean_loss(np.array([1.0, np.nan, 3.0])) == 2.0


# ---------------------------------------------------------------- in a run


def test_dropped_clients_do_not_train_but_relay():
    sim = Simulation(small_config(**{"faults.dropout": 0.5, "rounds": 3}))
    calls = spy_train(sim)
    history = sim.run()
    for (t, active, _, _), row in zip(calls, history):
        dropped = sim.faults.dropped(t, 6)
        assert dropped.any()
        assert not (active & dropped).any() and row["active_clients"] == int(active.sum())
    # they relay: after the last gossip a dropped client's row still moved towards its neighbours
    t, active, _, bank_in = calls[-1]
    moved = (sim.bank - bank_in).abs().sum(1) > 0
    assert moved[~active].all()


def test_dropout_in_centralized_algorithms_leaves_clients_out_of_the_average():
    sim = Simulation(small_config(**{"algorithm.name": "fedavg", "faults.dropout": 0.5, "rounds": 1}))
    calls = spy_train(sim)
    seen = {}
    orig = sim.algo.aggregate

    def aggregate(before, after, ctx):
        seen["after"], seen["active"] = after.clone(), ctx.active.clone()
        return orig(before, after, ctx)

    sim.algo.aggregate = aggregate
    sim.run()
    active = calls[0][1]
    assert 0 < active.sum() < 6
    assert np.array_equal(seen["active"].cpu().numpy(), active)
    assert torch.allclose(sim.bank[0], seen["after"][torch.as_tensor(active)].mean(0), atol=1e-6)


def test_every_client_dropped_keeps_the_global_model():
    cfg = small_config(**{"algorithm.name": "fedavg", "faults.dropout": 0.99, "rounds": 2})
    sim = Simulation(cfg)
    start = sim.bank.clone()
    history = sim.run()
    assert [r["active_clients"] for r in history] == [0, 0]
    assert torch.equal(sim.bank, start) and math.isnan(history[0]["train_loss"])


def test_link_failures_rebuild_w_and_record_live_edges_and_gap():
    cfg = small_config(**{"faults.link_failure": 0.4, "rounds": 6, "topology.name": "erdos_renyi",
                          "topology.p": 0.6})
    sim = Simulation(cfg)
    full = sim.graphs.graph(0)
    history = sim.run()
    gaps = set()
    for t, row in enumerate(history):
        H = sim.faults.surviving(full, t)
        assert row["live_edges"] == H.number_of_edges() <= full.number_of_edges()
        W = topologies.mixing_matrix(H, "metropolis")
        assert row["spectral_gap"] == pytest.approx(topologies.spectral_gap(W), abs=1e-12)
        gaps.add(round(row["spectral_gap"], 9))
    assert len(gaps) > 1  # the gap changes from round to round


def test_no_faults_keeps_the_static_w_and_reports_all_edges():
    sim = Simulation(small_config())
    row = sim.run()[-1]
    assert row["live_edges"] == 6 and "stragglers" not in row and "diverged_clients" not in row


def test_stragglers_get_fewer_steps():
    sim = Simulation(small_config(**{"faults.straggler": 0.7, "local.local_steps": 6, "rounds": 3}))
    calls = spy_train(sim)
    history = sim.run()
    for (t, _, steps, _), row in zip(calls, history):
        assert np.array_equal(steps, sim.faults.local_steps(t, np.full(6, 6)))
        assert row["stragglers"] == int((steps < 6).sum())
    assert sum(r["stragglers"] for r in history) > 0


@pytest.mark.parametrize("algo", ["dfedavg", "fedavg"])
def test_faults_give_the_same_run_on_both_engines(algo):
    cfg = training_config(**{"algorithm.name": algo, "faults.dropout": 0.3, "faults.link_failure": 0.3,
                             "faults.straggler": 0.5, "rounds": 6})
    a = Simulation(cfg).run()
    b = Simulation(cfg.replace(**{"engine.backend": "serial"})).run()
    exact = ("active_clients", "stragglers", "spectral_gap") + (("live_edges",) if algo != "fedavg" else ())
    assert_same_history(a, b, tol=0, keys=exact)
    assert_same_history(a, b, tol=1e-6)
    assert a[-1]["test_acc"] > 0.3


def test_faults_resume_from_a_checkpoint_to_the_same_run():
    cfg = small_config(**{"faults.dropout": 0.3, "faults.link_failure": 0.3, "faults.straggler": 0.5,
                          "rounds": 4})
    full = Simulation(cfg).run()
    first = Simulation(cfg)
    first.step()
    first.step()
    state = first.state_dict()
    second = Simulation(cfg)
    second.load_state_dict(state)
    rest = second.run()
    assert [r["round"] for r in rest[-2:]] == [3, 4]
    assert_same_history(full[2:], rest[-2:], tol=0,
                        keys=("test_loss", "consensus", "active_clients", "live_edges", "spectral_gap"))
