"""The round's metrics against values computed here, apart from dfl's evaluation code: local
accuracies (a per-client loop), cumulative communication (closed forms), the flatness hook
(dfl.flatness.max_eig on the mean model) and that it leaves the other metrics as they were.
The drift of centralized runs is checked in tests/test_engine.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dfl.simulation as simulation
from dfl import flatness
from dfl.simulation import Simulation
from tests.helpers import TIMINGS, assert_same_history, training_config


def accuracy(model, layout, row, x, y):
    layout.load_row(model, row)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def run_with_banks(cfg):
    """The history and the bank after every evaluated round."""
    sim = Simulation(cfg)
    banks = []
    h = sim.run(lambda s, row: banks.append(s.bank.clone()))
    return sim, h, banks


@pytest.mark.parametrize("engine", ["vectorized", "serial"])
def test_local_accuracy_mean_and_std_over_each_clients_held_out_split(engine):
    sim, h, banks = run_with_banks(training_config(**{"engine.backend": engine, "data.partition": "quantity"}))
    fed, model = sim.fed, sim.model
    for row, bank in zip(h, banks):
        accs = [accuracy(model, sim.layout, bank[i], fed.x_train[fed.client_test[i]], fed.y_train[fed.client_test[i]])
                for i in range(len(bank))]
        assert row["local_test_acc"] == pytest.approx(np.mean(accs), abs=1e-7)  # float32 ratios
        assert row["local_test_acc_std"] == pytest.approx(np.std(accs), abs=1e-7)
    assert h[-1]["local_test_acc_std"] > 0.01 and h[-1]["local_test_acc"] > 0.3


def test_local_accuracy_without_held_out_split_is_on_the_test_set(monkeypatch):
    # no held-out split: every local model on the test set (here the whole of it)
    monkeypatch.setattr(simulation, "LOCAL_EVAL_MAX", 10 ** 6)
    sim, h, banks = run_with_banks(training_config(**{"data.holdout_fraction": 0.0}))
    for row, bank in zip(h, banks):
        accs = [accuracy(sim.model, sim.layout, r, sim.x_test, sim.y_test) for r in bank]
        assert row["local_test_acc"] == pytest.approx(np.mean(accs), abs=1e-7)  # float32 ratios
        assert row["local_test_acc_std"] == pytest.approx(np.std(accs), abs=1e-7)


def model_mb(sim):
    return 4 * sum(p.numel() for p in sim.model.parameters()) / 1e6


@pytest.mark.parametrize("algo", ["fedavg", "mofedsam"])
def test_centralized_comm_is_two_models_per_active_client_and_round(algo):
    # each active client downloads and uploads the model: 2 m bytes per active client, cumulative
    sim = Simulation(training_config(**{"algorithm.name": algo, "algorithm.participation": 0.5,
                                        "faults.dropout": 0.3, "rounds": 5}))
    h = sim.run()
    active = [r["active_clients"] for r in h]
    assert len(set(active)) > 1  # dropout changes the count across rounds
    assert [r["comm_mb"] for r in h] == pytest.approx(list(np.cumsum([2 * a * model_mb(sim) for a in active])),
                                                      rel=1e-12)


def test_gossip_comm_is_q_models_per_live_edge_end_and_round():
    # every client sends Q models to each live neighbour, relays included: 2 Q |E_t| m bytes a round
    sim = Simulation(training_config(**{"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 3,
                                        "faults.link_failure": 0.3, "faults.dropout": 0.3, "rounds": 5,
                                        "topology.name": "exponential"}))
    h = sim.run()
    edges = [r["live_edges"] for r in h]
    assert len(set(edges)) > 1
    want = np.cumsum([2 * 3 * e * model_mb(sim) for e in edges])
    assert [r["comm_mb"] for r in h] == pytest.approx(list(want), rel=1e-12)


FLATNESS = ("hessian_max_eig", "hessian_trace", "sharpness")


def test_flatness_hook_is_max_eig_of_the_mean_model_and_changes_nothing_else():
    cfg = training_config(**{"rounds": 4, "metrics.hessian_iters": 8, "metrics.hessian_samples": 10 ** 6})
    plain = Simulation(cfg).run()
    sim, h, banks = run_with_banks(cfg.replace(**{"metrics.flatness_every": 2}))
    assert [all(k in r for k in FLATNESS) for r in h] == [False, True, False, True]
    # every other metric is what the run without the hook wrote, bit for bit
    keys = [k for k in plain[0] if k not in TIMINGS]
    assert_same_history(plain, h, tol=0, keys=keys)
    # all training samples (hessian_samples > the pool): the loss is the mean CE on the union of shards
    union = torch.cat([torch.as_tensor(p) for p in sim.fed.client_train])
    x, y = sim.fed.x_train[union], sim.fed.y_train[union]
    fs = flatness.loss_terms(sim.model, sim.layout, x, y)
    for row, bank in zip(h, banks):
        if row["round"] % 2:
            continue
        mean = bank.mean(0)
        want = flatness.max_eig(fs, mean, 8, flatness.generator(cfg.seed, row["round"]))
        assert row["hessian_max_eig"] == pytest.approx(want, rel=1e-6)
        # and the loss those terms sum to is the plain mean cross-entropy of the mean model
        sim.layout.load_row(sim.model, mean)
        with torch.no_grad():
            ce = float(F.cross_entropy(sim.model(x), y))
        assert float(sum(f(mean) for f in fs)) == pytest.approx(ce, rel=1e-6)
        assert row["hessian_max_eig"] > 0


def test_one_row_builder_for_every_runtime():
    """round_row: effective_gap is topologies.effective_gap of the round's gap; evaluated_row puts
    the evaluation, local accuracies and consensus around the training columns."""
    import topologies
    from dfl.metrics import evaluated_row, round_row

    train = round_row(train_loss=1.5, gap=0.1, gossip_steps=3, comm_mb=2.0, active_clients=4, lr=0.1, drift=0.5)
    assert train["effective_gap"] == topologies.effective_gap(0.1, 3) == pytest.approx(1 - 0.9 ** 3)
    row = evaluated_row(7, (0.9, 0.3), [0.5, float("nan"), 0.7], 0.01, train)
    assert list(row)[:5] == ["round", "test_acc", "test_loss", "local_test_acc", "local_test_acc_std"]
    assert row["local_test_acc"] == pytest.approx(0.6) and row["drift"] == 0.5 and row["consensus"] == 0.01
    assert np.isnan(evaluated_row(1, (0.0, 0.0), [], 0.0, train)["local_test_acc"])
