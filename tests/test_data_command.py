"""`dfl data CONFIG [--set ...] [--plot FILE]`."""
import argparse

import pytest

from dfl.commands import data as data_cmd
from dfl.errors import ConfigError


def parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    data_cmd.add_parser(sub)
    return p


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('seed = 2\n[data]\nname = "digits"\nnum_clients = 5\npartition = "dirichlet"\nalpha = 0.5\n')
    return path


def test_table(config, capsys):
    args = parser().parse_args(["data", str(config)])
    assert data_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "digits: 5 clients, partition dirichlet" in out
    assert "client" in out and "train" in out and "classes per client" in out
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 5


def test_many_clients_summary(config, capsys):
    args = parser().parse_args(["data", str(config), "--set", "data.num_clients=30", "--set", "data.partition=iid"])
    assert data_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "10 more clients not shown" in out


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot(config, tmp_path, suffix, capsys):
    out = tmp_path / f"labels{suffix}"
    args = parser().parse_args(["data", str(config), "--plot", str(out)])
    assert data_cmd.run(args) == 0
    assert out.is_file() and out.stat().st_size > 1000


def test_bad_plot_suffix(config, tmp_path):
    args = parser().parse_args(["data", str(config), "--plot", str(tmp_path / "x.jpg2")])
    with pytest.raises(ConfigError, match="png"):
        data_cmd.run(args)


def test_cli_exit_code(config, capsys):
    from tests.helpers import assert_user_error

    assert_user_error(["data", str(config), "--set", "data.name=mnist"], capsys, "data.root")


def test_table_many_classes():
    import torch
    from rich.console import Console

    from dfl.data import FederatedData

    y = torch.arange(300) % 100
    fed = FederatedData("cifar100", torch.zeros(300, 3, 32, 32), y, torch.zeros(1, 3, 32, 32), y[:1],
                        [torch.arange(0, 150), torch.arange(150, 300)], [torch.arange(0), torch.arange(0)],
                        (3, 32, 32), 100)
    console = Console(width=200, record=True)
    console.print(data_cmd.table(fed, "iid"))
    text = console.export_text()
    assert "top labels" in text and "0 (2)" in text
