"""`dfl topo`: the subcommand's parser and run(), called as the main CLI does."""
from __future__ import annotations

import argparse

import pytest

from dfl.commands import topo
from topologies import TopologyError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dfl")
    sub = parser.add_subparsers(dest="command")
    topo.add_parser(sub)
    return parser.parse_args(["topo", *argv])


def test_defaults():
    args = parse("ring")
    assert (args.name, args.n, args.mixing, args.gossip_steps, args.seed) == ("ring", 16, "metropolis", 1, 0)
    assert args.param == [] and args.plot is None and not args.list


def test_table_and_plot(tmp_path, capsys):
    out = tmp_path / "torus.png"
    assert topo.run(parse("torus", "--n", "16", "--gossip-steps", "2", "--plot", str(out))) == 0
    text = capsys.readouterr().out
    for label in ("nodes", "edges", "degree (min..max)", "diameter", "spectral gap",
                  "effective gap (Q=2)", "mixing time", "messages per round"):
        assert label in text
    assert "4..4" in text and "0.64" in text and "128" in text  # gap 0.4 -> 1 - 0.6^2; 2*32*2
    assert out.exists() and out.stat().st_size > 1000


def test_params_and_time_varying(capsys):
    assert topo.run(parse("small_world", "--n", "20", "--param", "k=6", "--param", "p=0.2",
                          "--seed", "3", "--mixing", "max_degree")) == 0
    assert "small_world: n=20, mixing max_degree, Q=1" in capsys.readouterr().out
    assert topo.run(parse("one_peer_exponential", "--n", "8")) == 0
    text = capsys.readouterr().out
    assert "round 0 shown" in text and "period" in text


def test_mixing_params(capsys):
    """--mixing-param reaches the rule: ring of 8 under W = I - a L has lambda_2 = 1 - a (2 - 2 cos(2 pi / 8))."""
    import math
    assert topo.run(parse("ring", "--n", "8", "--mixing", "laplacian", "--mixing-param", "a=0.2")) == 0
    gap = 0.2 * (2 - 2 * math.cos(2 * math.pi / 8))
    assert f"{gap:.6g}" in capsys.readouterr().out
    assert topo.run(parse("--list")) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["mixing", "laplacian", "a"] in [r[:3] for r in rows]
    assert ["mixing", "fastest_mixing", "iters"] in [r[:3] for r in rows]


def test_list(capsys):
    assert topo.run(parse("--list")) == 0
    text = capsys.readouterr().out
    for name in ("ring", "torus", "one_peer_exponential", "metropolis", "fastest_mixing"):
        assert name in text


def test_parse_params():
    assert topo.parse_params(["d=3", "p=0.5", "path=a b.txt"]) == {"d": 3, "p": 0.5, "path": "a b.txt"}
    with pytest.raises(TopologyError, match="use KEY=VALUE"):
        topo.parse_params(["p"])


@pytest.mark.parametrize("argv, message", [
    ((), "give a graph NAME"),
    (("rign",), "did you mean 'ring'"),
    (("ring", "--mixing", "metropolis_hastings"), "unknown mixing rule"),
    (("ring", "--n", "2"), "ring needs n >= 3, got n=2"),
    (("erdos_renyi", "--param", "p=0"), r"p must be in \(0, 1\], got 0"),
    (("ring", "--gossip-steps", "0"), "--gossip-steps must be >= 1"),
    (("ring", "--plot", "x.jpg"), r"\.png, \.pdf or \.svg"),
    (("ring", "--mixing", "laplacian", "--mixing-param", "b=0.2"), r"laplacian takes params a; got b=0.2"),
    (("ring", "--mixing-param", "a"), r"--mixing-param 'a': use KEY=VALUE"),
])
def test_user_errors_raise(argv, message, capsys):
    with pytest.raises(TopologyError, match=message):
        topo.run(parse(*argv))
    assert capsys.readouterr().out == ""  # checked before anything is printed


def test_main_cli_exit_code_2(capsys):
    from tests.helpers import assert_user_error

    assert assert_user_error(["topo", "ring", "--n", "2"], capsys) == "dfl: error: ring needs n >= 3, got n=2"
