"""`dfl plot` through the CLI parser."""
from __future__ import annotations

import pytest

from dfl import cli, plots
from dfl.commands import plot as plot_cmd

from tests.fake_runs import write_run, write_sweep
from tests.helpers import assert_user_error


def dfl(*argv: str) -> int:
    args = cli.build_parser().parse_args(["plot", *argv])
    return plot_cmd.run(args)


def test_figure_names_match_the_plots_module():
    assert plot_cmd.FIGURE_NAMES == tuple(plots.FIGURES)


def test_default_out_is_plots_dir_of_first_dir(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s", seeds=(0,))
    assert dfl(str(sweep)) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(sweep / "plots" / f"{n}.png") for n in ("consensus", "accuracy", "comm", "gap")]
    assert all((sweep / "plots" / f"{n}.png").stat().st_size > 1000 for n in ("consensus", "gap"))


def test_out_file_gets_one_file_per_figure(tmp_path, capsys):
    run = write_run(tmp_path / "r", extra=("hessian_max_eig",))
    assert dfl(str(run), "--out", str(tmp_path / "fig.pdf"), "--figure", "consensus", "--figure", "flatness") == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "fig-consensus.pdf"), str(tmp_path / "fig-flatness.pdf")]
    assert (tmp_path / "fig-flatness.pdf").read_bytes()[:4] == b"%PDF"


def test_single_figure_goes_to_out_itself(tmp_path, capsys):
    assert dfl(str(write_run(tmp_path / "r")), "--out", str(tmp_path / "c.svg"), "--figure", "consensus") == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "c.svg")]


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/nope"], "no such directory"),
    (["{tmp}/r", "--out", "{tmp}/x.jpg"], "use a file name ending in .png, .pdf, .svg"),
    (["{tmp}/r", "--figure", "flatness"], "no run recorded a flatness metric"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    write_run(tmp_path / "r")
    assert_user_error(["plot", *[a.format(tmp=tmp_path) for a in argv]], capsys, message)
