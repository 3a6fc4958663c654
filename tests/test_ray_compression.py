"""Compressed gossip on engine.backend = "ray" (dfl.engines.ray_exchange): the vectorized engine's
numbers for Choco-Gossip and the naive mode, static and time-varying graphs, D-PSGD; every copy
an actor holds equals its owner's x_hat; checkpoints resume on any engine. (An actor killed
inside a compressed gossip step: tests/test_ray_faults.py.)

One local Ray (2 CPUs, 4 pretend GPUs): four actors of half a CPU, started once and reused.
"""
import numpy as np
import pytest
import torch

from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import TRAINS, assert_same_history

ray = pytest.importorskip("ray")

CPU = {"engine.cpus_per_actor": 0.5}
TOPK = {"algorithm.compression": "topk", "algorithm.compression_ratio": 0.1, "algorithm.consensus_step": 0.3}
QSGD = {"algorithm.compression": "qsgd", "algorithm.levels": 7, "algorithm.consensus_step": 0.3}


def run_both(changes):
    """(vectorized history, Ray history, the Ray simulation, closed)."""
    cfg = small_config(**{**CPU, **TRAINS, **changes})
    ref = Simulation(cfg).run()
    sim = Simulation(cfg.replace(**{"engine.backend": "ray"}))
    try:
        got = sim.run()
        copies_match_owners(sim)
    finally:
        sim.close()
    return ref, got, sim


def copies_match_owners(sim):
    """Every actor's copies of other actors' x_hat rows equal the owners' rows, bit for bit."""
    x_hat = sim.algo.exchange.x_hat
    if x_hat is None:  # naive: nothing kept
        return
    (name, _), = x_hat.terms
    owners = sim.engine.gather(x_hat)
    halos = ray.get([a.__ray_call__.remote(lambda block: block.halos[name]) for a in sim.engine.actors])
    held = 0
    for ids, rows in halos:
        assert torch.equal(rows, owners[torch.tensor(ids)])
        held += len(ids)
    assert held > 0


@pytest.mark.parametrize("changes", [
    {**TOPK, "algorithm.name": "dfedsam", "local.optimizer": "sam", "algorithm.gossip_steps": 2},
    {**QSGD, "algorithm.name": "dfedsam", "local.optimizer": "sam", "algorithm.gossip_steps": 2},
    {**TOPK, "algorithm.gossip_steps": 2, "topology.name": "one_peer_exponential", "rounds": 4},
    {**QSGD, "algorithm.name": "dpsgd", "algorithm.participation": 0.5},
    {**TOPK, "algorithm.compression": "randomk", "algorithm.compressed_gossip": "naive",
     "algorithm.gossip_steps": 2},
], ids=["topk-q2-ring", "qsgd-q2-ring", "topk-one-peer-exp", "dpsgd-qsgd", "naive-randomk"])
def test_same_metrics_as_vectorized(local_ray, changes):
    ref, got, sim = run_both(changes)
    assert_same_history(ref, got, tol=1e-6)
    assert got[-1]["compression_ratio"] < 0.3 and len(sim.engine.blocks) == 4


def test_checkpoint_resumes_on_ray_and_on_the_vectorized_engine(local_ray):
    cfg = small_config(**{**CPU, **TRAINS, **TOPK, "algorithm.gossip_steps": 2,
                          "topology.name": "one_peer_exponential", "rounds": 4})
    ray_cfg = cfg.replace(**{"engine.backend": "ray"})
    whole = Simulation(cfg).run()
    first = Simulation(ray_cfg)
    try:
        while first.round < 2:
            first.step()
        state = first.state_dict()
    finally:
        first.close()
    x_hat = state["algorithm"]["exchange"]["x_hat"]
    assert isinstance(x_hat, torch.Tensor) and x_hat.shape == state["bank"].shape
    again = Simulation(ray_cfg)
    again.load_state_dict(state)
    try:
        assert_same_history(whole[2:], again.run(), tol=1e-6)
    finally:
        again.close()
    vec = Simulation(cfg)  # a Ray checkpoint continues on the vectorized engine too
    vec.load_state_dict(state)
    assert_same_history(whole[2:], vec.run(), tol=1e-6)


def test_stale_copies_are_sent_dense_once(local_ray):
    """On a ring the copies are sent dense in the first exchange only (x_hat placed from the
    initial model); on the one-peer exponential graph again whenever a new neighbour appears."""
    from dfl.engines import ray_engine

    sent = []
    orig = ray_engine.RayEngine._compressed_mix

    def spy(self, *args):
        stale = args[-1]
        sent.append(int(sum(m.sum() for per_dest in stale for m in per_dest)))
        return orig(self, *args)

    ray_engine.RayEngine._compressed_mix = spy
    try:
        run_both({**TOPK, "rounds": 3})
        ring, sent[:] = list(sent), []
        run_both({**TOPK, "topology.name": "one_peer_exponential", "rounds": 4})
    finally:
        ray_engine.RayEngine._compressed_mix = orig
    assert ring[0] > 0 and ring[1:] == [0, 0]
    assert all(np.array(sent) > 0)   # every round of the one-peer graph pairs clients across actors anew
