"""dfl.simulation's wiring: local steps from local.local_epochs, the batch cap, what the trainer is asked."""
import math

import numpy as np
import pytest

from dfl.simulation import Simulation
from tests.conftest import small_config


def spy_steps(sim):
    """The steps array passed to every trainer.train call."""
    calls = []
    orig = sim.trainer.train

    def train(bank, active, steps, *args):
        calls.append(np.asarray(steps).copy())
        return orig(bank, active, steps, *args)

    sim.trainer.train = train
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
