"""A local optimizer added in its own file (tests/optim_prox.py) is known to the registry, the
factory, the hyperparameter discovery and both engines, which agree on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dfl.optim as optim
from dfl.engines.serial import SerialEngine
from dfl.engines.vectorized import VectorizedEngine
from dfl.errors import ConfigError
from dfl.simulation import Simulation, local_options
from tests import optim_prox
from tests.conftest import small_config
from tests.helpers import assert_same_history, training_config

NAME = optim_prox.NAME


def test_registered_in_its_own_file():
    cls = optim.OPTIMIZERS[NAME]
    assert cls is optim_prox.FunctionalProx and cls.label == "Prox" and not cls.sam_family
    assert optim.hyperparameters(NAME) == {**optim.hyperparameters("sgd"), "mu": 0.1}
    opt = optim.make(NAME, mu=0.5, momentum=0.9)
    assert opt.base == optim.SGDStep(momentum=0.9) and opt.mu == 0.5
    assert opt.hyperparameter_values() == {**optim.hyperparameters("sgd"), "momentum": 0.9, "mu": 0.5}
    with pytest.raises(ConfigError, match=r"^mu: must be >= 0, got -1$"):
        optim.make(NAME, mu=-1)
    shell = opt.torch_optimizer(torch.nn.Linear(2, 2), lr=0.1)
    assert isinstance(shell, optim_prox.Prox) and shell.mu == 0.5
    assert shell.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("algorithm", ["pooled", "dfedavg"])
def test_runs_through_both_engines_end_to_end(algorithm):
    """Config -> Simulation -> engine, by name only: an SGD-family method is a dfedavg optimizer
    (the family comes from the registered class) and its own hyperparameter comes from
    [local.params]."""
    common = {"algorithm.name": algorithm, "local.optimizer": NAME, "local.momentum": 0.5,
              "local.params": {"mu": 0.5}}
    cfg = training_config(**common, **{"engine.backend": "vectorized"})
    assert Simulation(cfg).engine.hparams["mu"] == 0.5
    v = Simulation(cfg).run()
    s = Simulation(training_config(**common, **{"engine.backend": "serial"})).run()
    assert v[-1]["test_acc"] > 0.3  # it trains: chance is 0.1
    assert_same_history(v, s, tol=1e-6)


@pytest.mark.parametrize("reset_state", [True, False])
def test_both_engines_agree_over_clients_with_partial_activity(reset_state):
    """The engines directly, over 6 clients of which some sit a round out, for two rounds."""
    sim = Simulation(small_config(**{"local.reset_state": reset_state}))
    hp = {"mu": 2.0, "momentum": 0.5}  # a strong pull back to the round-start model
    engines = [cls(sim.model, sim.layout, sim.client_data, NAME, hp, sim.device, local=local_options(sim.cfg))
                for cls in (VectorizedEngine, SerialEngine)]
    banks = [sim.bank.clone(), sim.bank.clone()]
    steps = np.full(6, 3)
    for round_, active in enumerate([np.ones(6, bool), np.array([1, 0, 1, 1, 0, 1], bool)]):
        out = [t.train(b, active, steps, 0.3, round_, None) for t, b in zip(engines, banks)]
        banks = [bank for bank, _ in out]
        np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-6)
        torch.testing.assert_close(banks[0], banks[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(banks[0], sim.bank)


def test_the_term_acts():
    """mu pulls the clients back: their models move less from the round start than with SGD."""
    sim = Simulation(small_config())
    moved = {}
    for name, hp in [("sgd", {}), (NAME, {"mu": 5.0})]:
        t = VectorizedEngine(sim.model, sim.layout, sim.client_data, name, hp, sim.device)
        bank, _ = t.train(sim.bank.clone(), np.ones(6, bool), np.full(6, 5), 0.3, 0, None)
        moved[name] = float((bank - sim.bank).norm())
    assert moved[NAME] < 0.8 * moved["sgd"]
