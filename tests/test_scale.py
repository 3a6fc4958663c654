"""Scale: 1,000 clients of the digits MLP in one process (issue 5); README states the memory."""
import numpy as np
import pytest
import torch

from dfl.simulation import Simulation
from tests.conftest import small_config


@pytest.mark.slow
def test_thousand_clients_of_the_digits_mlp():
    cfg = small_config(**{"data.num_clients": 1000, "data.partition": "iid", "data.min_size": 1,
                          "model.hidden": 200, "algorithm.name": "dfedsam", "topology.name": "exponential",
                          "rounds": 1, "local.local_steps": 2})
    sim = Simulation(cfg)
    start = sim.bank[0].clone()
    h = sim.run()
    assert sim.bank.shape == (1000, 55_210) and h[-1]["active_clients"] == 1000
    X = sim.bank.double()
    assert h[-1]["consensus"] == pytest.approx(float(((X - X.mean(0)) ** 2).sum(1).mean()), rel=1e-6)
    assert h[-1]["consensus"] > 0 and not torch.equal(sim.bank[0], start)
    # every client sends its model to each of its neighbours once
    degrees = np.array([d for _, d in sim.graphs.graph(0).degree()])
    assert h[-1]["comm_mb"] == pytest.approx(degrees.sum() * 4 * 55_210 / 1e6, rel=1e-12)
