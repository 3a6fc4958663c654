"""dfl.simulation's wiring: local steps from local.local_epochs, the batch cap, what the engine is asked."""
import math

import numpy as np
import pytest
import torch

from dfl.simulation import Simulation
from tests.conftest import small_config


def spy_steps(sim):
    """The steps array passed to every engine.train call."""
    calls = []
    orig = sim.engine.train

    def train(bank, active, steps, *args):
        calls.append(np.asarray(steps).copy())
        return orig(bank, active, steps, *args)

    sim.engine.train = train
    return calls


@pytest.mark.parametrize("epochs,batch", [(1.0, 16), (0.5, 16), (2.0, 7), (0.01, 32)])
def test_local_epochs_give_ceil_of_epochs_times_shard_over_batch_steps(epochs, batch):
    cfg = small_config(**{"local.local_epochs": epochs, "local.batch_size": batch, "data.partition": "quantity"})
    sim = Simulation(cfg)
    sizes = [len(s) for s in sim.fed.client_train]
    assert len(set(sizes)) > 1  # unequal shards: unequal step counts
    want = [max(1, math.ceil(epochs * s / batch)) for s in sizes]
    assert sim.steps.tolist() == want
    calls = spy_steps(sim)
    sim.run()
    assert [c.tolist() for c in calls] == [want] * cfg.rounds


def test_local_steps_without_epochs_and_dpsgd_takes_one():
    assert Simulation(small_config(**{"local.local_steps": 7})).steps.tolist() == [7] * 6
    assert Simulation(small_config(**{"local.local_epochs": 3.0, "algorithm.name": "dpsgd"})).steps.tolist() == [1] * 6


def test_one_epoch_of_a_shard_that_the_batch_divides_visits_every_sample_once():
    cfg = small_config(**{"local.local_epochs": 1.0, "local.batch_size": 4, "data.partition": "iid"})
    sim = Simulation(cfg)
    for i, shard in enumerate(sim.fed.client_train):
        k = int(sim.steps[i])
        local, _ = sim.client_data.batches(np.array([i]), 0, k)
        drawn = local[0].reshape(-1).tolist()
        if len(shard) % 4 == 0:
            assert sorted(drawn) == list(range(len(shard)))
        else:  # the last batch is filled from the next epoch
            assert set(range(len(shard))) <= set(drawn) and len(drawn) == 4 * k


def test_batch_is_capped_by_the_largest_shard():
    sim = Simulation(small_config(**{"local.batch_size": 100_000, "data.partition": "iid"}))
    assert sim.client_data.batch_size == max(len(s) for s in sim.fed.client_train)


# ---------------------------------------------------------------------- one bank interface
class Box:
    """A bank the Simulation cannot index: only the engine's own operations open it."""

    def __init__(self, rows):
        self.rows = rows


def boxed_trainer(base):
    """The vectorized engine keeping its rows in a Box, as an engine holding them elsewhere would:
    every bank operation is overridden; a caller that touched the bank itself would fail."""
    from dfl.engines.vectorized import VectorizedEngine

    class Boxed(VectorizedEngine):
        def place(self, bank):
            return Box(bank)

        def train(self, bank, *args):
            rows, losses = super().train(bank.rows, *args)
            return Box(rows), losses

        def mix(self, X, W, steps=1):
            return Box(super().mix(X.rows, W, steps))

        def combine(self, terms):
            return Box(super().combine([(c, X.rows) for c, X in terms]))

        def copy(self, X):
            return Box(super().copy(X.rows))

        def take(self, X, rows):
            return super().take(X.rows, rows)

        def patched(self, X, new_rows):
            return Box(super().patched(X.rows, new_rows))

        def gather(self, X):
            return super().gather(X.rows)

        def finite(self, X):
            return super().finite(X.rows)

        def summary(self, X):
            return super().summary(X.rows)

    return Boxed(base.model, base.layout, base.data, base.optimizer, base.hparams, base.device,
                 base.chunk_size, local=base.local, settings=base.settings)


@pytest.mark.parametrize("changes", [{"algorithm.name": "dfedavg"}, {"algorithm.name": "dpsgd"},
                                     {"faults.on_nan": "skip_client", "local.lr": 1000.0}])
def test_the_round_loop_only_uses_the_engines_bank_operations(changes):
    """Simulation, faults and checkpoints never ask what kind of bank the engine holds: an engine
    whose bank is an opaque handle gives the same numbers, bit for bit. (Server averaging reads
    the rows itself: its engine is told so, RunSettings.engine_rows, and keeps a tensor.)"""
    cfg = small_config(rounds=3, **changes)
    ref = Simulation(cfg)
    want = ref.run()
    sim = Simulation(cfg)
    sim.engine = boxed_trainer(sim.engine)
    sim.state = type(sim.state)(round=0, bank=sim.engine.place(sim.state.bank))
    got = sim.run()
    drop = ("train_s", "exchange_s", "eval_s", "wall_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in got] == \
        [{k: v for k, v in r.items() if k not in drop} for r in want]
    assert torch.equal(sim.state_dict()["bank"], ref.state_dict()["bank"])


def test_advance_returns_the_next_state_and_leaves_the_given_one():
    sim = Simulation(small_config())
    start = sim.state
    state, training = sim.advance(start)
    assert (start.round, state.round) == (0, 1) and start.history == [] and sim.state is start
    assert state.comm_mb == training["comm_mb"] > 0 and state.bank is not start.bank


def test_build_gives_the_parts_without_an_engine():
    """The Flower server apps use build(cfg) as it is: nothing trains, no engine is made."""
    from dfl.simulation import build

    parts = build(small_config(**{"topology.name": "one_peer_exponential"}))
    rg = parts.mixing(1)
    assert rg.graph.number_of_nodes() == 6 and rg.W.shape == (6, 6) and parts.period_gap > 0
    assert parts.initial_bank().shape == (6, parts.layout.size) and parts.local_eval is not None
    assert parts.mixing(1) is rg and parts.mixing(2) is not rg  # one W, rebuilt when the graph changes
