"""Config: labels name what ran, overrides parse as TOML values, to_dict/from_dict round-trip."""
import pytest

from dfl.config import Config, dumps_toml, from_dict, parse_overrides, to_dict
from dfl.plots import algo_color
from dfl.rundir.read import load_run
from tests.conftest import small_config


@pytest.mark.parametrize("algo,opt,label", [
    ("dfedsam", "", "DFedSAM, ring, Q=2"), ("dfedsam", "sam", "DFedSAM, ring, Q=2"),
    ("dfedsam", "tram", "DFedTRAM, ring, Q=2"), ("dfedsam_mgs", "gsam", "DFedGSAM-MGS, ring, Q=2"),
    ("fedsam", "asam", "FedASAM"), ("dfedavg", "", "DFedAvg, ring, Q=2"), ("pooled", "sam", "Pooled (sam)"),
])
def test_label_names_the_optimizer_variant(algo, opt, label):
    cfg = small_config(**{"algorithm.name": algo, "local.optimizer": opt, "algorithm.gossip_steps": 2})
    assert cfg.label() == label


def test_variants_get_their_own_colour(tmp_path):
    from tests.fake_runs import edit_config, write_run
    sam = load_run(write_run(tmp_path / "a", "dfedsam", "ring", 1))
    tram = load_run(edit_config(write_run(tmp_path / "b", "dfedsam", "ring", 1), 'optimizer = "sam"', 'optimizer = "tram"'))
    assert (sam.method, tram.method) == ("dfedsam", "dfedsam+tram")
    assert algo_color(sam.method) != algo_color(tram.method)


def test_overrides_parse_as_toml_values():
    assert parse_overrides(["local.lr=0.05", "topology.name=ring", 'algorithm.name=["a", "b"]', "x.y=true"]) == {
        "local.lr": 0.05, "topology.name": "ring", "algorithm.name": ["a", "b"], "x.y": True}


def test_round_trip_through_toml():
    import tomllib
    cfg = small_config(**{"local.rho": 0.1, "topology.p": 0.3, "faults.dropout": 0.1})
    assert from_dict(tomllib.loads(dumps_toml(to_dict(cfg)))) == cfg
    assert Config().replace(**{"local.lr": 0.5}).local.lr == 0.5
