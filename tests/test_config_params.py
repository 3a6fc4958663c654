"""[local.params], [topology.params] and [topology.mixing_params]: each value reaches the
optimizer / graph generator / mixing rule; names and values are checked by the registry that
owns them (exit 2, one line); flat keys keep working and name each parameter once."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import topologies
from dfl.config import Config, dumps_toml, from_dict, load_config, parse_overrides, read_toml, to_dict
from dfl.errors import ConfigError
from dfl.simulation import Simulation, optimizer_hparams
from tests.conftest import small_config
from tests.helpers import assert_user_error, write_config

TORUS = {"topology.name": "torus", "data.num_clients": 12}
TORUS_SETS = ["topology.name=torus", "data.num_clients=12"]


def test_graph_params_reach_the_generator():
    sim = Simulation(small_config(**TORUS, **{"topology.params.rows": 4}))
    G = sim.graphs.graph(0)
    assert (G.graph["rows"], G.graph["cols"]) == (4, 3)  # the default shape of 12 is 3 x 4
    assert sorted(d for _, d in G.degree()) == [4] * 12


def test_mixing_params_reach_the_rule():
    sim = Simulation(small_config(**{"topology.mixing": "laplacian", "topology.mixing_params.a": 0.2}))
    W = sim.mixing(0).operator.to_dense().numpy()
    assert W[0, 1] == pytest.approx(0.2) and W[0, 0] == pytest.approx(0.6)  # default a = 1/3: W = J/3 on a ring
    G = topologies.build("ring", 6)
    fm = Simulation(small_config(**{"topology.mixing": "fastest_mixing", "topology.mixing_params.iters": 1}))
    np.testing.assert_allclose(fm.mixing(0).operator.to_dense().numpy(), topologies.mixing_matrix(G), atol=1e-6)


def test_optimizer_params_reach_the_optimizer():
    base = {"local.momentum": 0.5, "local.lr": 0.3}
    cfg = small_config(**base, **{"local.params.dampening": 0.5})
    assert optimizer_hparams(Simulation(cfg).cfg, {})["dampening"] == 0.5
    damped, plain = Simulation(cfg).run(), Simulation(small_config(**base)).run()
    assert damped[-1]["train_loss"] != plain[-1]["train_loss"]


def test_flat_keys_and_tables_are_one_parameter(tmp_path):
    """[local.params] rho is local.rho (config.toml keeps the flat key); both ways with different
    values is an error; an override replaces the value however the file gave it."""
    cfg = from_dict({"local": {"params": {"rho": 0.1}}, "topology": {"params": {"k": 4, "rows": 3}}})
    assert (cfg.local.rho, cfg.local.params, cfg.topology.k, cfg.topology.params) == (0.1, {}, 4, {"rows": 3})
    assert from_dict({"local": {"rho": 0.1, "params": {"rho": 0.1}}}).local == cfg.local  # the same value twice is fine
    with pytest.raises(ConfigError, match=r"^local.params.rho: given twice, as local.rho = 0.05 and "
                                          r"local.params.rho = 0.1; keep one$"):
        from_dict({"local": {"rho": 0.05, "params": {"rho": 0.1}}})
    p = write_config(tmp_path / "c.toml", {"local.params.rho": 0.1, "local.params.dampening": 0.2})
    assert read_toml(p)["local"]["rho"] == 0.1
    assert load_config(p, parse_overrides(["local.rho=0.3"])).local.rho == 0.3
    assert load_config(p, parse_overrides(["local.params.rho=0.4"])).local.rho == 0.4
    assert Config().replace(**{"local.params.rho": 0.2}).local.rho == 0.2


def test_tables_round_trip_through_toml():
    import tomllib
    cfg = small_config(**TORUS, **{"topology.params.rows": 4, "topology.mixing_params.a": 0.1,
                                   "local.params.dampening": 0.5})
    text = dumps_toml(to_dict(cfg))
    assert "[topology.params]\nrows = 4" in text and "[topology.mixing_params]\na = 0.1" in text
    assert from_dict(tomllib.loads(text)) == cfg and hash(cfg) == hash(from_dict(tomllib.loads(text)))
    assert "params" not in to_dict(Config())["local"]  # empty tables are left out of config.toml


BAD = [
    ("graph-param-name", [*TORUS_SETS, "topology.params.row=4"],
     "torus takes params rows, cols; got row=4 (did you mean 'rows'?)"),
    ("graph-param-value", [*TORUS_SETS, "topology.params.rows=2"], "torus: rows must be an integer >= 3, got 2"),
    ("mixing-param-name", ["topology.mixing=laplacian", "topology.mixing_params.aa=0.1"],
     "mixing rule laplacian takes params a; got aa=0.1 (did you mean 'a'?)"),
    ("mixing-param-none", ["topology.mixing_params.a=0.1"], "mixing rule metropolis takes no params; got a=0.1"),
    ("mixing-param-value", ["topology.mixing=fastest_mixing", "topology.mixing_params.iters=0"],
     "fastest_mixing: iters must be an integer >= 1, got 0"),
    ("optimizer-param-name", ["local.params.dampning=0.5"],
     "local.params.dampning: optimizer 'sgd' takes momentum, dampening, nesterov, weight_decay; "
     "got dampning = 0.5 (did you mean 'dampening'?)"),
    ("optimizer-param-value", ["local.params.dampening=2"], "local.params.dampening: must be in [0, 1], got 2"),
    ("param-table-value", ["local.params.x={a=1}"], "local.params.x: must be a number, a string or true/false"),
    ("param-not-a-table", ["topology.params=3"], "topology.params: must be a table [topology.params]"),
]


@pytest.mark.parametrize("sets,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_param_is_one_line_exit_2(tmp_path, capsys, sets, needle):
    p = write_config(tmp_path / "c.toml")
    args = [a for s in sets for a in ("--set", s)]
    out = tmp_path / "out"
    assert_user_error(["run", str(p), "--out", str(out), "--quiet", *args], capsys, needle)
    assert not out.exists()


def test_bad_param_through_the_command_line(tmp_path):
    """`python -m dfl run` itself: a misspelled graph parameter is exit 2 and one line."""
    p = write_config(tmp_path / "c.toml", {"topology.params.colz": 4}, **TORUS)
    res = subprocess.run([sys.executable, "-m", "dfl", "run", str(p), "--out", str(tmp_path / "o"), "--quiet"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "dfl: error: torus takes params rows, cols; got colz=4 (did you mean 'cols'?)"]
