"""Labels, the centralized flag and the optimizer family come from the registered classes
(dfl.methods): a built-in or a test-local algorithm alike, with nothing listed in dfl.config."""
from __future__ import annotations

import subprocess
import sys

import pytest

from dfl import methods
from dfl.algorithms import ALGORITHMS
from dfl.errors import ConfigError
from dfl.optim import OPTIMIZERS
from dfl.rundir.read import load_run
from dfl.simulation import Simulation
from tests import local_algorithm
from tests.conftest import small_config
from tests.fake_runs import edit_config, write_run


@pytest.mark.parametrize("algo,opt,label", [
    ("dfedsam", "asam", "DFedASAM"), ("dfedsam", "sam", "DFedSAM"), ("dfedsam", "", "DFedSAM"),
    ("mofedsam", "mesa", "MoFedMESA"), ("dfedsam_mgs", "tram", "DFedTRAM-MGS"), ("dpsgd", "sgd", "D-PSGD"),
    ("pooled", "asam", "Pooled (asam)"), ("pooled", "", "Pooled"), ("not_registered", "asam", "not_registered"),
])
def test_method_label_from_the_classes(algo, opt, label):
    assert methods.method_label(algo, opt) == label


def test_metadata_is_declared_by_each_class():
    central = {n for n in ALGORITHMS if ALGORITHMS[n].centralized}
    assert {"fedavg", "fedsam", "mofedsam", "pooled"} <= central and "dfedsam" not in central
    assert all(methods.is_centralized(n) == (n in central) for n in ALGORITHMS)
    assert ALGORITHMS["dfedsam"].optimizers()[0] == "sam" and ALGORITHMS["fedavg"].optimizers()[0] == "sgd"
    sam_family = {n for n in OPTIMIZERS if OPTIMIZERS[n].sam_family}
    assert set(ALGORITHMS["dfedsam"].optimizers()) == sam_family and "sgd" not in sam_family
    assert {n for n in OPTIMIZERS if methods.is_variant(n)} == set(OPTIMIZERS) - {"sgd", "sam"}  # not a default


def test_wrong_family_names_the_algorithms_that_take_it():
    with pytest.raises(ConfigError, match=r"^local.optimizer: algorithm 'dfedavg' trains with sgd.*, got 'asam' "
                                          r"\(use algorithm.name = 'dfedsam' or 'dfedsam_mgs' for SAM-family"):
        Simulation(small_config(**{"local.optimizer": "asam"}))
    with pytest.raises(ConfigError, match=r"got 'sgd' \(use algorithm.name = 'fedavg' for SGD-family optimizers\)$"):
        Simulation(small_config(**{"algorithm.name": "fedsam", "local.optimizer": "sgd"}))


def test_an_algorithm_registered_in_its_own_file(tmp_path):
    name = local_algorithm.NAME
    cfg = small_config(**{"algorithm.name": name, "local.optimizer": "asam", "algorithm.gossip_steps": 3})
    assert cfg.label() == "LocalASAM"  # its own label, the variant's name, no graph: it is centralized
    assert methods.is_centralized(name) and Simulation(cfg).algo.centralized
    with pytest.raises(ConfigError, match="algorithm 'localsam' trains with sam or "):
        Simulation(cfg.replace(**{"local.optimizer": "sgd"}))
    for facts in (True, False):  # recorded in manifest.json as dfl run does, or asked of the registries
        run = write_run(tmp_path / f"r{facts}", "dfedsam", "ring", 1, summary=False, facts=facts)
        loaded = load_run(edit_config(run, '"dfedsam"', f'"{name}"'))
        assert (loaded.label, loaded.topology, loaded.method) == ("LocalSAM", "server", name)


def test_reading_runs_does_not_import_torch():
    """dfl.config and dfl.rundir.read / groups ask the registries lazily: `dfl plot --help` stays light."""
    code = "import sys, dfl.rundir.read, dfl.rundir.groups, dfl.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
