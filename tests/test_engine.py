"""The engine against equivalences: vectorized == serial, DFedAvg on W = J == FedAvg,
SAM with rho = 0 == its base optimizer, determinism, partial participation.

Equivalences are checked in a regime that trains (tests.helpers.TRAINS: test accuracy ~0.5 after
3 rounds, chance 0.1) to 1e-6; the measured differences are 0 or ~1e-8 relative."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import topologies

from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_same_history, training_config


def run(cfg):
    return Simulation(cfg).run()


@pytest.mark.parametrize("algo,opt", [
    ("dfedavg", "sgd"), ("dfedavgm", "sgd"), ("dpsgd", "sgd"), ("dfedsam", "sam"), ("dfedsam", "asam"),
    ("dfedsam", "gsam"), ("dfedsam", "saf-kept"), ("dfedsam", "mesa"), ("dfedsam", "tram"), ("fedavg", "sgd"),
    ("fedsam", "sam"), ("mofedsam", "sam"),
])
def test_vectorized_equals_serial(algo, opt):
    # "-kept": the optimizer state carries over between rounds (local.reset_state = false)
    kept = opt.endswith("-kept")
    common = {"algorithm.name": algo, "local.optimizer": opt.removesuffix("-kept"), "local.momentum": 0.5,
              "local.reset_state": not kept,
              # one step a round (D-PSGD) and alpha = 0.1 (MoFedSAM) need more rounds to train
              **({"rounds": 15} if algo == "dpsgd" else {}),
              **({"algorithm.mofedsam_alpha": 0.5} if algo == "mofedsam" else {}),
              **({"local.rho": 0.1} if opt == "tram" else {})}   # TRAM's default radius 0.5 trains slowly
    v = run(training_config(**common, **{"engine.backend": "vectorized"}))
    s = run(training_config(**common, **{"engine.backend": "serial"}))
    assert v[-1]["test_acc"] > 0.3  # the models move: chance is 0.1
    assert_same_history(v, s, tol=1e-6)


def test_vectorized_equals_serial_with_partial_participation_and_epochs():
    common = {"algorithm.participation": 0.5, "local.local_epochs": 0.5, "data.partition": "quantity",
              "algorithm.name": "dfedsam", "topology.name": "exponential"}
    v = run(training_config(**common, **{"engine.backend": "vectorized", "engine.chunk_size": 4}))
    s = run(training_config(**common, **{"engine.backend": "serial"}))
    assert_same_history(v, s, tol=1e-6)
    assert v[-1]["active_clients"] == 3


def test_chunk_size_does_not_change_results():
    a = run(training_config(**{"engine.chunk_size": 1}))
    b = run(training_config(**{"engine.chunk_size": 6}))
    assert_same_history(a, b, tol=1e-6)


def test_dfedavg_on_complete_graph_equals_fedavg():
    # Metropolis on the complete graph is W = J/n: one gossip step is exact averaging.
    d = run(training_config(**{"algorithm.name": "dfedavg", "topology.name": "complete"}))
    f = run(training_config(**{"algorithm.name": "fedavg"}))
    assert_same_history(d, f, tol=1e-6, keys=("test_acc", "test_loss", "local_test_acc", "train_loss"))
    assert d[-1]["consensus"] < 1e-10 and f[-1]["consensus"] == 0.0


def test_sam_with_rho_zero_is_dfedavg():
    sam = run(training_config(**{"algorithm.name": "dfedsam", "local.rho": 0.0}))
    avg = run(training_config(**{"algorithm.name": "dfedavg"}))
    assert_same_history(sam, avg, tol=1e-6, keys=("test_acc", "test_loss", "local_test_acc", "train_loss",
                                                  "consensus", "comm_mb"))


def test_same_seed_same_metrics_other_seed_differs():
    a, b = run(small_config()), run(small_config())
    assert_same_history(a, b, tol=0)
    c = run(small_config(seed=1))
    assert c[-1]["test_loss"] != a[-1]["test_loss"]


def test_more_gossip_steps_shrink_consensus():
    xi = [run(small_config(**{"algorithm.gossip_steps": q, "algorithm.name": "dfedsam"}))[-1]["consensus"]
          for q in (1, 4)]
    assert xi[1] < xi[0]


def test_metrics_rows_have_the_contract_keys():
    h = run(small_config(**{"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 2}))
    for key in ("round", "test_acc", "test_loss", "local_test_acc", "train_loss", "consensus",
                "spectral_gap", "comm_mb", "wall_s", "effective_gap", "local_test_acc_std"):
        assert key in h[-1]
    gap = h[-1]["spectral_gap"]
    assert h[-1]["effective_gap"] == pytest.approx(1 - (1 - gap) ** 2)
    # ring of 6 with Metropolis: every client sends Q * degree models per round
    model_mb = 4 * (64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10) / 1e6
    assert h[-1]["comm_mb"] == pytest.approx(2 * 2 * 6 * 2 * model_mb)


def hand_consensus(X):
    """(1/n) sum_i ||x_i - x_bar||^2 in float64, written out."""
    X = X.double()
    return float(((X - X.mean(0)) ** 2).sum(1).mean())


@pytest.mark.parametrize("algo,participation", [("fedsam", 1.0), ("fedavg", 0.5)])
def test_drift_is_the_consensus_distance_of_the_active_trained_rows(algo, participation):
    sim = Simulation(training_config(**{"algorithm.name": algo, "algorithm.participation": participation}))
    trained = []
    orig = sim.engine.train

    def spy(bank, active, *args):
        out, losses = orig(bank, active, *args)
        trained.append(out[torch.as_tensor(active)].clone())
        return out, losses

    sim.engine.train = spy
    h = sim.run()
    assert [len(x) for x in trained] == [r["active_clients"] for r in h] == [int(6 * participation)] * 3
    for row, rows in zip(h, trained):
        assert row["drift"] == pytest.approx(hand_consensus(rows), rel=1e-9, abs=1e-12)
        assert row["drift"] > 1e-3 and row["consensus"] == 0.0  # every client holds the global model after


def test_pooled_metrics_are_those_of_its_one_model():
    sim = Simulation(training_config(**{"algorithm.name": "pooled"}))
    h = sim.run()
    model = sim.model
    sim.layout.load_row(model, sim.bank[0])
    with torch.no_grad():
        logits = model(sim.x_test)
    acc = float((logits.argmax(1) == sim.y_test).double().mean())
    assert h[-1]["test_acc"] == pytest.approx(acc, abs=1e-12)
    assert h[-1]["test_loss"] == pytest.approx(float(F.cross_entropy(logits, sim.y_test)), rel=1e-6)
    assert h[-1]["local_test_acc"] == h[-1]["test_acc"] and h[-1]["local_test_acc_std"] == 0.0
    assert h[-1]["comm_mb"] == 0.0 and h[-1]["consensus"] == 0.0
    assert acc > 0.3  # it trains (chance 0.1): 15 steps on federation-sized batches of the union


def test_inactive_clients_keep_their_model_before_gossip():
    cfg = small_config(**{"algorithm.participation": 0.34, "algorithm.name": "dfedavg"})
    sim = Simulation(cfg)
    from dfl import rng
    active = rng.participation(sim.cfg.seed, 0, 6, 0.34)
    before = sim.bank.clone()
    bank, losses = sim.engine.train(sim.bank.clone(), active, sim.steps, 0.1, 0, None)
    assert torch.equal(bank[~torch.as_tensor(active)], before[~torch.as_tensor(active)])
    serial = Simulation(cfg.replace(**{"engine.backend": "serial"}))
    _, want = serial.engine.train(serial.bank.clone(), active, serial.steps, 0.1, 0, None)
    assert np.isnan(losses[~active]).all() and np.allclose(losses[active], want[active], rtol=1e-6, atol=0)


def test_time_varying_topology_mixes_with_one_matching_per_round():
    # one-peer exponential on 8: round t pairs i with i xor 2^(t mod 3), W = (I + P) / 2
    sim = Simulation(training_config(**{"topology.name": "one_peer_exponential", "data.num_clients": 8}))
    ws = [sim.mixing(t).operator.to_dense() if sim.mixing(t).operator.layout != torch.strided
          else sim.mixing(t).operator for t in range(3)]
    for t, W in enumerate(ws):
        P = torch.zeros(8, 8, dtype=W.dtype)
        P[torch.arange(8), torch.arange(8) ^ (2 ** t)] = 1
        assert torch.allclose(W, (torch.eye(8, dtype=W.dtype) + P) / 2, atol=1e-12), t
    h = sim.run()
    assert h[-1]["consensus"] == pytest.approx(hand_consensus(sim.bank), rel=1e-9)
    assert h[-1]["consensus"] > 0 and h[-1]["test_acc"] > 0.3


def test_large_federations_use_a_sparse_w_with_the_same_metrics(monkeypatch):
    import topologies.mixing
    dense = run(training_config(**{"algorithm.name": "dfedsam", "data.holdout_fraction": 0.0}))
    monkeypatch.setattr(topologies.mixing, "DENSE_MAX_N", 4)  # pretend 6 clients is a huge federation
    sim = Simulation(training_config(**{"algorithm.name": "dfedsam", "data.holdout_fraction": 0.0}))
    assert sim.mixing(0).operator.layout == torch.sparse_csr
    assert_same_history(dense, sim.run(), tol=1e-6)


def test_sharpness_every_k_rounds_is_the_sam_ascent_loss_increase():
    from dfl.metrics import sharpness
    sim = Simulation(small_config(**{"metrics.sharpness_every": 2, "rounds": 4, "local.rho": 0.05}))
    h = sim.run()
    assert ["sharpness" in r for r in h] == [False, True, False, True]
    direct = sharpness(sim.model, sim.layout, sim.bank.mean(0), sim.x_test, sim.y_test, 0.05)
    assert h[-1]["sharpness"] == pytest.approx(direct, rel=1e-6)
    assert h[-1]["sharpness"] > 0  # a small ascent step along the gradient raises the loss


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_host_to_device_copies_exactly(device):
    from dfl.engines.base import host_to_device

    a = np.arange(24, dtype=np.int64).reshape(2, 3, 4)[:, ::2]  # not contiguous
    t = host_to_device(a, torch.device(device))
    assert t.device.type == device and t.dtype == torch.int64
    assert t.cpu().tolist() == a.tolist()
    assert host_to_device(np.array([True, False]), torch.device(device)).cpu().tolist() == [True, False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("algo,opt", [("dfedavgm", "sgd"), ("dfedsam", "sam"), ("dfedsam", "mesa")])
def test_gpu_equals_cpu(algo, opt):
    common = {"algorithm.name": algo, "local.optimizer": opt, "local.momentum": 0.5, "rounds": 3,
              "algorithm.participation": 0.5}
    g = run(training_config(**common, **{"engine.device": "cuda"}))
    c = run(training_config(**common, **{"engine.device": "cpu"}))
    assert_same_history(g, c, tol=1e-5)  # other kernels: float32 rounding differs


def test_time_varying_topology_records_the_gap_of_one_period():
    cfg = small_config(**{"topology.name": "one_peer_exponential", "data.num_clients": 8,
                          "algorithm.gossip_steps": 2})
    h = run(cfg)
    want = topologies.describe("one_peer_exponential", 8, q=2)["period_gap"]
    assert 0 < want <= 1  # one period (log2 8 = 3 matchings) of the one-peer exponential graph mixes
    assert all(r["period_gap"] == pytest.approx(want) for r in h)
    assert all(r["spectral_gap"] == pytest.approx(0.0, abs=1e-12) for r in h)  # one matching per round
    assert "period_gap" not in run(small_config())[-1]
