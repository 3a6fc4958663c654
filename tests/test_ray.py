"""engine.backend = "ray": same numbers as the vectorized backend, placement, exchange plan, faults.

One local Ray (2 CPUs and 4 pretend GPUs, so that placement over GPUs can be checked on a CPU
machine) is shared by the module; actors go back to an idle pool between runs, so only the
first run of each actor shape pays the actor start-up.
"""
import os
import signal

import numpy as np
import pytest
import torch

import topologies
from dfl.config import EngineConfig
from dfl.errors import ConfigError
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import TRAINS, assert_same_history

ray = pytest.importorskip("ray")

from dfl.engines import ray_exchange, ray_session  # noqa: E402


def run(cfg, on_round=None):
    sim = Simulation(cfg)
    try:
        return sim.run(on_round), sim
    finally:
        sim.close()


def assert_same(ref, got, tol=1e-6):
    """Every numeric metric but the timings; Ray's measured differences are 0 or ~1e-8 relative."""
    assert_same_history(ref, got, tol=tol)


# Every run of the module but the last uses the same actor shape: an actor per pretend GPU
# (4 actors, half a CPU each; they train on CPU), started once and reused.
CPU = {"engine.cpus_per_actor": 0.5}


@pytest.mark.parametrize("changes", [
    {"algorithm.name": "dfedavg"},
    {"algorithm.name": "dpsgd", "algorithm.participation": 0.5},
    {"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 3, "topology.name": "erdos_renyi",
     "topology.p": 0.5},
    {"algorithm.name": "mofedsam", "rounds": 3},
    {"algorithm.name": "dfedavg", "faults.dropout": 0.3, "faults.link_failure": 0.3, "faults.straggler": 0.5},
], ids=["dfedavg", "dpsgd-half", "mgs-q3-er", "mofedsam", "faults"])
def test_same_metrics_as_vectorized(local_ray, changes):
    changes = {**TRAINS, **changes}  # a regime that trains (test_acc ~0.5 after 3 rounds)
    ref = Simulation(small_config(**CPU, **changes)).run()
    got, sim = run(small_config(**CPU, **changes, **{"engine.backend": "ray"}))
    assert_same(ref, got)
    assert all(r["actor_restarts"] == 0 and r["train_s"] > 0 and r["eval_s"] > 0 for r in got)
    assert len(sim.engine.blocks) == 4


def test_actor_killed_mid_run_is_restarted_and_the_run_goes_on(local_ray):
    cfg = small_config(**CPU, **{"rounds": 4})
    pids = []

    def kill(sim, row):
        pids.append(sim.engine.actor_info()[1]["pid"])
        if sim.round == 2:
            os.kill(pids[-1], signal.SIGKILL)

    got, _ = run(cfg.replace(**{"engine.backend": "ray"}), kill)
    assert_same(Simulation(cfg).run(), got)
    assert [r["actor_restarts"] for r in got] == [0, 0, 1, 1]
    assert pids[0] == pids[1] != pids[2] == pids[3]


def test_checkpoint_resume_and_cross_backend_state(local_ray):
    cfg = small_config(**CPU, **{"rounds": 3, "algorithm.name": "dfedavgm"})
    ray_cfg = cfg.replace(**{"engine.backend": "ray"})
    first = Simulation(ray_cfg.replace(rounds=2))
    first.run()
    state = first.state_dict()
    first.close()
    assert state["bank"].shape == (6, first.layout.size)
    again = Simulation(ray_cfg)
    again.load_state_dict(state)
    vec = Simulation(cfg)  # a Ray checkpoint continues on the vectorized backend too
    vec.load_state_dict(state)
    ref = Simulation(cfg).run()
    try:
        assert_same(ref[-1:], again.run()[-1:])
    finally:
        again.close()
    assert_same(ref[-1:], vec.run()[-1:])


def test_an_actor_per_gpu_by_default(local_ray):
    """Default: an actor per GPU, each with its own CUDA_VISIBLE_DEVICES (training stays on CPU)."""
    got, sim = run(small_config(**CPU, **{"engine.backend": "ray"}))
    info = sim.engine.placement_info
    assert sorted(i["cuda_visible_devices"] for i in info) == ["0", "1", "2", "3"]
    assert all(i["device"] == "cpu" for i in info)
    assert [i["clients"] for i in info] == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert_same(Simulation(small_config()).run(), got)  # gossip across four actors


@pytest.mark.slow  # new actor processes for the new shape (~15 s on 2 cores)
def test_fractional_gpus_share_a_gpu(local_ray):
    """gpus_per_actor = 0.5: two actors on a GPU."""
    cfg = small_config(**{"engine.backend": "ray", "engine.cpus_per_actor": 0.5,
                          "engine.gpus_per_actor": 0.5, "engine.clients_per_actor": 2})
    _, sim = run(cfg)
    gpus = [i["gpu_ids"] for i in sim.engine.placement_info]
    assert len(gpus) == 3 and all(len(g) == 1 for g in gpus)
    assert sorted(np.unique([g[0] for g in gpus], return_counts=True)[1]) == [1, 2]


def test_exchange_plan_reproduces_w_times_x():
    G = topologies.build("erdos_renyi", 11, seed=1, p=0.3)
    W = topologies.mixing_matrix(G)
    X = torch.randn(11, 4, dtype=torch.float64)
    blocks = [(0, 3), (3, 7), (7, 8), (8, 11)]
    per_actor, sources = ray_exchange.exchange_plan(torch.as_tensor(W), blocks)
    out = []
    for a, (lo, hi) in enumerate(blocks):
        block, _ = per_actor[a]
        incoming = [X[blocks[b][0] + per_actor[b][1][slot]] for b, slot in sources[a]]
        out.append(torch.as_tensor(block, dtype=torch.float64) @ torch.cat([X[lo:hi], *incoming]))
    assert torch.allclose(torch.cat(out), torch.as_tensor(W) @ X, atol=1e-6)
    sent = sum(len(idx) for _, dests in per_actor for idx in dests)
    assert sent < 11 * 3  # only neighbours' rows travel, not whole blocks


def test_placement_defaults_and_errors():
    eng = EngineConfig(backend="ray")
    assert ray_session.placement(100, eng, {"CPU": 16, "GPU": 4}) == (4, 1.0, 1.0)
    assert ray_session.placement(100, eng, {"CPU": 2}) == (2, 1.0, 0.0)
    assert ray_session.placement(3, eng, {"CPU": 8}) == (3, 1.0, 0.0)
    quarter = EngineConfig(backend="ray", gpus_per_actor=0.25, cpus_per_actor=0.5)
    assert ray_session.placement(100, quarter, {"CPU": 8, "GPU": 4}) == (16, 0.5, 0.25)
    one_each = EngineConfig(backend="ray", clients_per_actor=1)
    with pytest.raises(ConfigError, match="engine: 100 Ray actors"):
        ray_session.placement(100, one_each, {"CPU": 16, "GPU": 4})


@pytest.mark.parametrize("changes", [
    {"algorithm.name": "dfedavg"},
    {"algorithm.name": "dpsgd", "algorithm.participation": 0.5},  # mixes the start-of-round rows
    {"algorithm.name": "dfedavgm", "local.reset_state": False},   # optimizer state cleared in the actor
], ids=["dfedavg", "dpsgd-half", "dfedavgm-state"])
def test_skip_client_equals_the_vectorized_backend(local_ray, changes):
    """faults.on_nan = "skip_client" on Ray: client 2's samples are NaN, so it diverges whenever it
    trains and restarts from the mean of its ring neighbours 1 and 3, which live on other actors."""
    from dfl.data import load_federated

    cfg = small_config(**CPU, **{"rounds": 3, "faults.on_nan": "skip_client", **changes})

    def poisoned():
        fed = load_federated(cfg.data, cfg.seed)
        fed.x_train[fed.client_train[2]] = float("nan")
        return fed

    ref_sim = Simulation(cfg, fed=poisoned())
    ref = ref_sim.run()
    sim = Simulation(cfg.replace(**{"engine.backend": "ray"}), fed=poisoned())
    try:
        got = sim.run()
        bank = sim.engine.gather(sim.bank)
    finally:
        sim.close()
    assert sum(r["diverged_clients"] for r in ref) >= 1
    assert [r["diverged_clients"] for r in got] == [r["diverged_clients"] for r in ref]
    assert_same(ref, got)
    assert torch.isfinite(bank).all() and torch.allclose(bank, ref_sim.bank, atol=1e-6)
