"""NaN / Inf in a client's loss or model: detected at once; on_nan = "stop" or "skip_client"."""
import math

import numpy as np
import pytest
import torch

from dfl.engines.vectorized import VectorizedEngine
from dfl.errors import DivergedError
from dfl.faults import diverged, finite_rows, neighbour_rows
from dfl.gossip import BankOps
from dfl.rundir.checkpoint import load_checkpoint
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_user_error, read_metrics, write_config

SMALL = {"rounds": 4, "local.local_steps": 2, "metrics.checkpoint_every": 1}


def poisoned(orig, client, round_, what="row"):
    """A engine.train (bound or unbound) putting a NaN into `client`'s row (or an Inf into its
    loss) in round `round_`."""
    def train(self_or_bank, *args):
        out_bank, losses = orig(self_or_bank, *args)
        t = args[-2]
        if t == round_:
            if what == "row":
                out_bank[client, 3] = float("nan")
            else:
                losses[client] = float("inf")
        return out_bank, losses
    return train


def test_diverged_checks_losses_and_rows_of_active_clients():
    bank = torch.zeros(4, 3)
    bank[1, 2] = float("inf")
    bank[3, 0] = float("nan")
    losses = np.array([np.nan, 1.0, 2.0, 1.0])
    active = np.array([True, True, True, False])
    assert diverged(finite_rows(bank).numpy(), losses, active).tolist() == [True, True, False, False]


def test_finite_rows_is_exact_when_a_row_sum_overflows():
    big = torch.full((5, 4), 3e38)  # finite entries whose float32 sum is inf
    big[1] = 1.0
    big[2, 1] = float("nan")
    big[3, 3] = float("-inf")
    big[4, :2] = torch.tensor([float("inf"), float("-inf")])  # sums to nan
    assert finite_rows(big).tolist() == [True, True, False, False, False]
    assert finite_rows(torch.ones(3, 2, dtype=torch.float64)).tolist() == [True] * 3


@pytest.mark.parametrize("what", ["row", "loss"])
def test_stop_names_client_and_round(what):
    sim = Simulation(small_config(**{"rounds": 3}))
    sim.engine.train = poisoned(sim.engine.train, 4, 1, what)
    with pytest.raises(DivergedError, match=r"client 4: .*not finite.* in round 2"):
        sim.run()
    assert sim.round == 1


def test_real_divergence_is_caught_in_the_round_it_happens():
    sim = Simulation(small_config(**{"local.lr": 1e6, "local.schedule": "constant"}))
    with pytest.raises(DivergedError, match=r"round 1;"):
        sim.step()


def test_stop_from_the_cli_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    cfg = write_config(tmp_path / "c.toml", **SMALL)
    out = tmp_path / "run"
    monkeypatch.setattr(VectorizedEngine, "train", poisoned(VectorizedEngine.train, 3, 2))
    assert_user_error(["run", str(cfg), "--out", str(out), "--quiet"], capsys, "client 3", "round 3")
    state = load_checkpoint(out)
    assert state["round"] == 2 and torch.isfinite(state["bank"]).all()
    assert [r["round"] for r in read_metrics(out)] == [1, 2]


def test_neighbour_mean_and_isolated_fallback():
    import networkx as nx

    G = nx.Graph([(0, 1), (1, 2), (2, 3)])
    G.add_node(4)
    bank = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    fallback = -torch.ones(5, 3)
    bad = np.array([False, True, True, False, True])
    ops = BankOps()
    out = ops.patched(bank, neighbour_rows(ops, bank, fallback, bad, G))
    assert torch.equal(out[1], bank[0])            # neighbours 0 (good) and 2 (bad)
    assert torch.equal(out[2], bank[3])
    assert torch.equal(out[4], fallback[4])        # isolated: its start-of-round model
    assert torch.equal(out[[0, 3]], bank[[0, 3]])


def test_skip_client_restarts_from_its_neighbours_average():
    sim = Simulation(small_config(**{"rounds": 3, "faults.on_nan": "skip_client"}))
    orig = sim.engine.train
    seen = {}

    def train(bank, active, steps, lr, t, corr):
        bank, losses = orig(bank, active, steps, lr, t, corr)
        if t == 1:
            seen["trained"] = bank.clone()
            bank[2] = float("nan")
        return bank, losses

    agg = sim.algo.aggregate

    def aggregate(before, after, ctx):
        if ctx.round == 1:
            seen["after"] = after.clone()
        return agg(before, after, ctx)

    sim.engine.train, sim.algo.aggregate = train, aggregate
    history = sim.run()
    ring = seen["trained"]
    assert torch.allclose(seen["after"][2], (ring[1] + ring[3]) / 2)
    assert torch.isfinite(sim.bank).all()
    assert [r["diverged_clients"] for r in history] == [0, 1, 0]
    assert [r["active_clients"] for r in history] == [6, 5, 6]
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_skip_client_in_centralized_algorithms_drops_it_from_the_average():
    sim = Simulation(small_config(**{"rounds": 2, "algorithm.name": "fedavg", "faults.on_nan": "skip_client"}))
    orig = sim.engine.train
    seen = {}

    def train(bank, active, steps, lr, t, corr):
        bank, losses = orig(bank, active, steps, lr, t, corr)
        if t == 0:
            seen["trained"] = bank.clone()
            bank[0] = float("inf")
            losses[0] = float("nan")
        return bank, losses

    sim.engine.train = train
    sim.step()
    assert torch.allclose(sim.bank[0], seen["trained"][1:].mean(0), atol=1e-6)
    assert torch.isfinite(sim.bank).all()


def test_skip_client_clears_the_local_optimizer_state():
    sim = Simulation(small_config(**{"rounds": 2, "algorithm.name": "dfedavgm", "faults.on_nan": "skip_client",
                                     "local.reset_state": False}))  # state kept across rounds: cleared on NaN
    orig = sim.engine.train

    def train(bank, active, steps, lr, t, corr):
        bank, losses = orig(bank, active, steps, lr, t, corr)
        if t == 0:
            bank[5] = float("nan")
            for leaf in torch.utils._pytree.tree_leaves(sim.engine.state):
                if leaf.is_floating_point() and leaf.dim():
                    leaf[5] = float("nan")
        return bank, losses

    sim.engine.train = train
    history = sim.run()
    for leaf in torch.utils._pytree.tree_leaves(sim.engine.state):
        assert torch.isfinite(leaf).all()
    assert history[1]["diverged_clients"] == 0 and torch.isfinite(sim.bank).all()


def test_skip_client_on_the_serial_engine_rebuilds_its_optimizer():
    sim = Simulation(small_config(**{"rounds": 2, "engine.backend": "serial", "faults.on_nan": "skip_client"}))
    sim.engine.train = poisoned(sim.engine.train, 1, 1)
    history = sim.run()
    assert sim.engine.opts[1] is None and sim.engine.opts[0] is not None
    assert history[-1]["diverged_clients"] == 1 and torch.isfinite(sim.bank).all()
