"""Scale: 1,000 clients of the digits MLP in one process (issue 5); README states the memory."""
import numpy as np
import pytest

from dfl.simulation import Simulation
from tests.conftest import small_config


@pytest.mark.slow
def test_thousand_clients_of_the_digits_mlp():
    cfg = small_config(**{"data.num_clients": 1000, "data.partition": "iid", "data.min_size": 1,
                          "model.hidden": 200, "algorithm.name": "dfedsam", "topology.name": "exponential",
                          "rounds": 1, "local.local_steps": 2})
    sim = Simulation(cfg)
    h = sim.run()
    assert sim.bank.shape == (1000, 55_210)
    assert np.isfinite(h[-1]["consensus"]) and h[-1]["active_clients"] == 1000
