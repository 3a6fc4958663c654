"""experiments/flatness.toml and the sweep's [sweep] zip that pairs algorithms with optimizers."""
from pathlib import Path

import pytest

from dfl import sweep
from dfl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def raw(**extra):
    base = {"rounds": 2, "algorithm": {"name": ["dfedavg", "dfedsam", "dfedsam"]},
            "local": {"optimizer": ["sgd", "sam", "tram"]}, "model": {"name": ["mlp", "cnn"]}}
    base.update(extra)
    return base


def test_zip_pairs_keys_and_multiplies_the_rest():
    axes, variants = sweep.expand(raw(sweep={"zip": ["algorithm.name", "local.optimizer"]}))
    assert list(axes) == ["algorithm.name", "local.optimizer", "model.name"]
    got = [(v.config.algorithm.name, v.config.local.optimizer, v.config.model.name) for v in variants]
    assert got == [("dfedavg", "sgd", "mlp"), ("dfedavg", "sgd", "cnn"), ("dfedsam", "sam", "mlp"),
                   ("dfedsam", "sam", "cnn"), ("dfedsam", "tram", "mlp"), ("dfedsam", "tram", "cnn")]
    assert variants[0].overrides == {"algorithm.name": "dfedavg", "local.optimizer": "sgd",
                                     "model.name": "mlp"}
    assert len({v.name for v in variants}) == 6
    # a list of groups works the same; without zip it is the full product
    _, same = sweep.expand(raw(sweep={"zip": [["algorithm.name", "local.optimizer"]]}))
    assert [v.overrides for v in same] == [v.overrides for v in variants]
    assert len(sweep.expand(raw(model={"name": "mlp"}))[1]) == 9


@pytest.mark.parametrize("spec,message", [
    ({"zip": ["algorithm.name", "rounds"]}, "'rounds' is not a list-valued key"),
    ({"zip": ["algorithm.name", "model.name"]}, "lists of one length"),
    ({"zip": [["model.name"], ["model.name"]]}, "named twice"),
    ({"zip": "algorithm.name"}, "must be a list of keys"),
    ({"pairs": ["algorithm.name"]}, "the only key of \\[sweep\\] is zip"),
])
def test_zip_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        sweep.expand(raw(sweep=spec))


def test_flatness_experiment_expands_to_six_runs():
    axes, variants = sweep.load(ROOT / "experiments" / "flatness.toml")
    got = {(v.config.label(), v.config.algorithm.name, v.config.local.optimizer, v.config.model.name)
           for v in variants}
    methods = [("DFedAvg", "dfedavg", "sgd"), ("DFedSAM", "dfedsam", "sam"), ("DFedTRAM", "dfedsam", "tram")]
    assert got == {(*method, model) for method in methods for model in ("cnn", "vit")}
    assert all(v.config.metrics.flatness_every == 5 for v in variants)
