"""dfl.rundir.read / groups and dfl.plots on fake run and sweep directories with known metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfl import plots
from dfl.errors import DflError
from dfl.rundir.groups import group_runs
from dfl.rundir.read import load_run, load_runs
from tests.fake_runs import edit_config, edit_metrics, fake_metrics, write_run, write_sweep
from tests.helpers import assert_user_error


def lines_by_label(ax) -> dict:
    """The data lines of an axes by label (theory slopes and bands are labelled '_...')."""
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


# ---------------------------------------------------------------------------- rundir


def test_load_run_reads_metrics_config_and_label(tmp_path):
    run = load_run(write_run(tmp_path / "r", "dfedsam", "ring", 4, seed=3))
    assert run.label == "DFedSAM, ring, Q=4"
    assert (run.algorithm, run.topology, run.gossip_steps, run.seed) == ("dfedsam", "ring", 4, 3)
    rows = fake_metrics("dfedsam", "ring", 4, 3)
    np.testing.assert_allclose(run.metrics["consensus"], [r["consensus"] for r in rows])
    assert run.rounds == 10 and run.manifest["peak_memory_mb"] == 123.0


def test_label_from_config_when_no_summary(tmp_path):
    assert load_run(write_run(tmp_path / "a", "dfedavg", "torus", 2, summary=False)).label == "DFedAvg, torus, Q=2"
    central = load_run(write_run(tmp_path / "b", "fedavg", summary=False))
    assert central.label == "FedAvg" and central.topology == "server"


def test_load_runs_expands_sweeps_and_plain_dirs_and_groups_by_seed(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    runs = load_runs([sweep])
    assert len(runs) == 8
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["DFedSAM, ring, Q=1", "DFedSAM, ring, Q=4",
                                         "DFedAvg, ring, Q=1", "DFedAvg, ring, Q=4"]
    assert all(sorted(g.seeds) == [0, 1] for g in groups)
    plain = tmp_path / "plain"
    write_run(plain / "x" / "a", "dfedsam")
    write_run(plain / "y", "dfedavg")
    assert [r.algorithm for r in load_runs([plain, plain / "y"])] == ["dfedsam", "dfedavg"]  # each dir once


def test_sweep_member_without_metrics_is_skipped_and_reported(tmp_path):
    sweep = write_sweep(tmp_path / "s", algos=("dfedsam",), qs=(1,), seeds=(0, 1, 2))
    (sweep / "dfedsam-ring-q1-s1" / "metrics.jsonl").unlink()
    (sweep / "dfedsam-ring-q1-s2" / "metrics.jsonl").write_text("")  # `dfl run` has just started it
    skipped = []
    assert len(load_runs([sweep], on_skip=skipped.append)) == 1
    assert len(skipped) == 2 and "dfedsam-ring-q1-s1" in skipped[0] and "no metrics yet" in skipped[0]
    (sweep / "dfedsam-ring-q1-s0" / "metrics.jsonl").write_text("")
    with pytest.raises(DflError, match="none of the sweep's runs has metrics yet"):
        load_runs([sweep])


def test_groups_with_same_label_are_told_apart(tmp_path):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b")
    edit_config(b, "lr = 0.1", "lr = 0.05")
    assert sorted(g.label for g in group_runs(load_runs([a, b]))) == [
        "DFedSAM, ring, Q=1 (local.lr=0.05)", "DFedSAM, ring, Q=1 (local.lr=0.1)"]


def test_series_is_mean_min_max_over_seeds(tmp_path):
    (g,) = group_runs(load_runs([write_sweep(tmp_path / "s", algos=("dfedsam",), qs=(2,), seeds=(0, 1, 2))]))
    x, mean, lo, hi = g.series("consensus")
    ys = np.array([[r["consensus"] for r in fake_metrics("dfedsam", "ring", 2, s)] for s in (0, 1, 2)])
    np.testing.assert_allclose(x, np.arange(1, 11))
    np.testing.assert_allclose(mean, ys.mean(0))
    np.testing.assert_allclose(lo, ys.min(0))
    np.testing.assert_allclose(hi, ys.max(0))


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no metrics.jsonl; is it a run or sweep directory"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a directory"),
])
def test_bad_paths_give_clear_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DflError, match=message) as info:
        load_runs([path])
    assert str(path) in str(info.value)


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    run = write_run(tmp_path / "r")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = '{"round": 3, "test_acc": 0.5,'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DflError, match=r"metrics\.jsonl:3: not a JSON object"):
        load_run(run)


def test_truncated_last_line_of_a_running_run_is_ignored(tmp_path):
    run = write_run(tmp_path / "r")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"round": 11, "test_')
    assert load_run(run).rounds == 10


def test_empty_metrics_file(tmp_path):
    run = write_run(tmp_path / "r")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(DflError, match="no metrics rows"):
        load_run(run)


# ---------------------------------------------------------------------------- figures


def test_consensus_figure_draws_the_recorded_data_on_log_axes(tmp_path):
    runs = load_runs([write_sweep(tmp_path / "s", seeds=(0,), topos=("ring", "torus"))])
    fig = plots.plot_consensus(runs)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ring", "torus"]
    for ax, topo in zip(axes, ("ring", "torus")):
        assert ax.get_yscale() == "log"
        drawn = lines_by_label(ax)
        assert set(drawn) == {f"{a}, {topo}, Q={q}" for a in ("DFedSAM", "DFedAvg") for q in (1, 4)}
        line = drawn[f"DFedAvg, {topo}, Q=4"]
        rows = fake_metrics("dfedavg", topo, 4, 0)
        np.testing.assert_allclose(line.get_xdata(), [r["round"] for r in rows])
        np.testing.assert_allclose(line.get_ydata(), [r["consensus"] for r in rows])
        assert drawn[f"DFedAvg, {topo}, Q=1"].get_linestyle() != line.get_linestyle()  # Q by line style
    assert fig.get_figwidth() == pytest.approx(plots.STYLES["screen"].wide)


def test_band_over_seeds(tmp_path):
    runs = load_runs([write_sweep(tmp_path / "s", algos=("dfedsam",), qs=(1,), seeds=(0, 1))])
    ax = plots.plot_accuracy(runs).axes[0]
    (line,) = ax.get_lines()
    ys = np.array([[r["test_acc"] for r in fake_metrics("dfedsam", "ring", 1, s)] for s in (0, 1)])
    np.testing.assert_allclose(line.get_ydata(), ys.mean(0))
    (band,) = ax.collections
    verts = band.get_paths()[0].vertices
    assert verts[:, 1].min() == pytest.approx(ys.min()) and verts[:, 1].max() == pytest.approx(ys.max())
    assert band.get_facecolor()[0][:3] == pytest.approx(line.get_color() and _rgb(line.get_color()))


def _rgb(color):
    from matplotlib.colors import to_rgb
    return to_rgb(color)


def _algo_of(label: str) -> str:
    return label.split(",")[0].split(" (")[0]


def test_one_colour_per_algorithm_across_figures(tmp_path):
    runs = load_runs([write_sweep(tmp_path / "s", algos=("dfedsam", "dfedavg", "fedavg"), seeds=(0,))])
    colours: dict[str, set] = {}
    for name, fig in plots.make_figures(runs).items():
        for ax in fig.axes:
            for line in ax.get_lines():
                if not line.get_label().startswith("_"):
                    colours.setdefault(_algo_of(line.get_label()), set()).add(_rgb(line.get_color()))
            for coll in ax.collections:
                if coll.get_label() and not coll.get_label().startswith("_"):
                    colours.setdefault(_algo_of(coll.get_label()), set()).add(tuple(coll.get_facecolor()[0][:3]))
    assert set(colours) == {"DFedSAM", "DFedAvg", "FedAvg"}
    for algo, name in (("dfedsam", "DFedSAM"), ("dfedavg", "DFedAvg"), ("fedavg", "FedAvg")):
        assert colours[name] == {_rgb(plots.ALGO_COLORS[algo])}
    assert len(set(plots.ALGO_COLORS.values())) == len(plots.ALGO_COLORS)


def test_accuracy_vs_comm_uses_cumulative_mb(tmp_path):
    runs = load_runs([write_sweep(tmp_path / "s", algos=("dfedsam",), qs=(1, 8), seeds=(0,))])
    ax = plots.plot_accuracy_vs_comm(runs).axes[0]
    line = lines_by_label(ax)["Q=8"]  # only Q differs: the label says only that
    rows = fake_metrics("dfedsam", "ring", 8, 0)
    np.testing.assert_allclose(line.get_xdata(), [r["comm_mb"] for r in rows])
    np.testing.assert_allclose(line.get_ydata(), [r["test_acc"] for r in rows])
    assert ax.get_xscale() == "log"  # 0.8 MB .. 64 MB spans more than a decade


def test_gap_scatter_one_point_per_group(tmp_path):
    runs = load_runs([write_sweep(tmp_path / "s", algos=("dfedsam", "fedavg"), qs=(1, 4), seeds=(0, 1),
                                  topos=("ring", "complete"))])
    fig = plots.plot_gap(runs)
    acc_ax, cons_ax = fig.axes
    assert cons_ax.get_yscale() == "log"
    points = {c.get_label(): c.get_offsets()[0] for c in acc_ax.collections if not c.get_label().startswith("_")}
    assert "FedAvg" not in points  # no spectral gap for server averaging
    assert len(points) == 4
    finals = [fake_metrics("dfedsam", "ring", 4, s)[-1] for s in (0, 1)]
    np.testing.assert_allclose(points["DFedSAM, ring, Q=4"],
                               [finals[0]["effective_gap"], np.mean([f["test_acc"] for f in finals])])
    assert acc_ax.get_xscale() == "log"  # 0.05 .. 1.0


def test_flatness_only_when_recorded(tmp_path):
    plain = load_runs([write_sweep(tmp_path / "a", algos=("dfedsam",), qs=(1,), seeds=(0,))])
    assert "flatness" not in plots.make_figures(plain)
    with pytest.raises(DflError, match="no run recorded a flatness metric"):
        plots.plot_flatness(plain)
    runs = load_runs([write_sweep(tmp_path / "b", algos=("dfedsam",), qs=(1,), seeds=(0,), extra=("hessian_max_eig",))])
    fig = plots.make_figures(runs)["flatness"]
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_allclose(line.get_xdata(), [2, 4, 6, 8, 10])  # null rows dropped
    np.testing.assert_allclose(line.get_ydata(), [50 / r for r in (2, 4, 6, 8, 10)])


def test_runs_with_different_metrics_name_run_and_key(tmp_path):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", "dfedavg", drop=("consensus",))
    runs = load_runs([a, b])
    plots.plot_accuracy(runs)  # does not need consensus
    with pytest.raises(DflError, match=r"metric 'consensus' is missing from 1 of 2 runs: .*b \(DFedAvg, ring, Q=1\)"):
        plots.plot_consensus(runs)


@pytest.mark.parametrize("style", ["screen", "paper"])
def test_sizes_and_fonts_of_each_style(tmp_path, style):
    st = plots.STYLES[style]
    runs = load_runs([write_sweep(tmp_path / "s", seeds=(0,))])
    for name, fig in plots.make_figures(runs, style=style).items():
        panels = sum(ax.get_visible() for ax in fig.axes)
        assert panels == (1 if name in ("comm", "consensus") else 2)  # one topology: one consensus panel
        assert fig.get_figwidth() == pytest.approx(st.width if panels == 1 else st.wide)
        texts = [t for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))
                 if t.get_text() and t.get_visible()]
        assert min(t.get_fontsize() for t in texts) >= st.font - 2 >= 6  # legible when printed
    ax = plots.plot_accuracy_vs_comm(runs, style=style).axes[0]
    assert ax.xaxis.label.get_fontsize() == st.font
    assert ax.get_xlabel().replace("\n", " ") == plots.METRIC_LABELS["comm_mb"]


@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_save_by_extension(tmp_path, ext, magic):
    fig = plots.plot_consensus(load_runs([write_run(tmp_path / "r")]))
    out = plots.save(fig, tmp_path / "sub" / f"fig.{ext}")
    assert out.read_bytes()[:len(magic)] == magic


def test_save_rejects_other_extensions(tmp_path):
    fig = plots.plot_consensus(load_runs([write_run(tmp_path / "r")]))
    with pytest.raises(DflError, match=r"use one of \.png, \.pdf, \.svg"):
        plots.save(fig, tmp_path / "fig.jpg")


def test_unknown_figure_name(tmp_path):
    with pytest.raises(DflError, match="unknown figure 'foo'; choose from consensus"):
        plots.make_figures(load_runs([write_run(tmp_path / "r")]), ["foo"])


# ---------------------------------------------------------------------------- figures a paper can use


def _inside(inner, outer, tol: float = 0.5) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


@pytest.mark.parametrize("style", ["screen", "paper"])
def test_legend_and_every_text_lie_inside_the_saved_canvas(tmp_path, style):
    runs = []
    for i in range(7):  # seven variants with long names, only the name differs: long legend labels
        run = write_run(tmp_path / f"r{i}", seed=0, summary=False)
        edit_config(run, 'name = ""', f'name = "variant {i} of a much longer experiment name than fits one column"')
        runs.append(run)
    figures = {"comm": plots.plot_accuracy_vs_comm(load_runs(runs), style=style),
               "consensus": plots.plot_consensus(load_runs(runs), style=style)}
    for name, fig in figures.items():
        plots.save(fig, tmp_path / f"{name}.png")  # draws with the Agg renderer
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        assert len(legend.get_texts()) == 7 + (name == "consensus")  # + the gossip-only slope
        assert _inside(legend.get_window_extent(renderer), fig.bbox), name
        assert _inside(fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans), fig.bbox), name
        axes_box = fig.axes[0].get_window_extent(renderer)
        assert axes_box.height / fig.dpi >= 0.9 * plots.STYLES[style].panel_h  # the canvas grew, not the axes shrank
        assert legend.get_window_extent(renderer).y1 <= fig.axes[0].get_tightbbox(renderer).y0 + 0.03 * fig.dpi  # below


def test_variants_differing_only_in_rho_get_their_own_colours(tmp_path):
    a = write_run(tmp_path / "a")
    b = edit_config(write_run(tmp_path / "b"), "rho = 0.05", "rho = 0.01")
    c = edit_config(write_run(tmp_path / "c", "dfedavg"), 'optimizer = "sam"', 'optimizer = "sgd"')
    colours: dict[str, set] = {}
    figs = plots.make_figures(load_runs([a, b, c]), names=["consensus", "accuracy", "comm"])
    for fig in figs.values():
        for ax in fig.axes:
            for label, line in lines_by_label(ax).items():
                colours.setdefault(label, set()).add(_rgb(line.get_color()))
        title = fig.texts[0].get_text().replace("\n", " ") if fig.texts else fig._suptitle.get_text()
        assert "digits" in title and "ring, Q=1" in title  # shared settings in the title, not the labels
    assert set(colours) == {"DFedSAM, ρ=0.05", "DFedSAM, ρ=0.01", "DFedAvg"}
    assert all(len(c) == 1 for c in colours.values())  # the same colour in every figure
    assert len({next(iter(c)) for c in colours.values()}) == 3  # and one colour per variant


def test_two_swept_keys_colour_one_and_line_style_the_other(tmp_path):
    groups = group_runs(load_runs([write_sweep(tmp_path / "s", qs=(1, 4), seeds=(0,))]))
    fig = plots.plot_accuracy(groups)
    lines = lines_by_label(fig.axes[0])
    assert set(lines) == {"DFedSAM, Q=1", "DFedSAM, Q=4", "DFedAvg, Q=1", "DFedAvg, Q=4"}
    for algo in ("DFedSAM", "DFedAvg"):
        assert lines[f"{algo}, Q=1"].get_color() == lines[f"{algo}, Q=4"].get_color()
        assert lines[f"{algo}, Q=1"].get_linestyle() != lines[f"{algo}, Q=4"].get_linestyle()
    for q in (1, 4):
        assert lines[f"DFedSAM, Q={q}"].get_color() != lines[f"DFedAvg, Q={q}"].get_color()
        assert lines[f"DFedSAM, Q={q}"].get_linestyle() == lines[f"DFedAvg, Q={q}"].get_linestyle()
    (legend,) = fig.legends
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert list(entries) == ["DFedSAM", "DFedAvg", "Q=1", "Q=4"]  # the legend says which is which
    assert entries["DFedSAM"].get_color() == lines["DFedSAM, Q=4"].get_color()
    assert entries["Q=4"].get_linestyle() == lines["DFedAvg, Q=4"].get_linestyle()


def _theory_lines(ax) -> list:
    return [line for line in ax.get_lines() if str(line.get_gid()).startswith("theory:")]


@pytest.mark.parametrize("q", [1, 3])
def test_gossip_only_slope_is_one_minus_gap_to_the_2q_on_a_ring(tmp_path, q):
    import torch

    import topologies
    from dfl.gossip import mix
    from dfl.metrics import consensus_distance

    n = 8
    W = topologies.mixing_matrix(topologies.build("ring", n), "metropolis")
    gap = topologies.spectral_gap(W)
    run = edit_metrics(edit_config(write_run(tmp_path / "r", q=q), "num_clients = 8", f"num_clients = {n}"),
                        spectral_gap=gap, effective_gap=1 - (1 - gap) ** q)
    (ax,) = [a for a in plots.plot_consensus(load_runs([run])).axes if a.get_visible()]
    (theory,) = _theory_lines(ax)
    x, y = theory.get_xdata(), theory.get_ydata()
    np.testing.assert_allclose(np.diff(x), 1.0)
    np.testing.assert_allclose(y[1:] / y[:-1], (1 - gap) ** (2 * q), rtol=1e-12)
    first = fake_metrics("dfedsam", "ring", q, 0)[0]
    assert (x[0], y[0]) == (first["round"], pytest.approx(first["consensus"]))  # starts at the measured value
    # the slope is what gossip alone does to the slowest mode: Xi shrinks by lambda_2^(2Q) per round
    k = np.arange(n)
    X = torch.tensor(np.outer(np.cos(2 * np.pi * k / n), np.ones(3)))
    ratio = consensus_distance(mix(X, torch.tensor(W), steps=q)) / consensus_distance(X)
    assert ratio == pytest.approx(y[1] / y[0], rel=1e-9)


@pytest.mark.parametrize("topo, period", [("one_peer_exponential", 3), ("random_neighbors", 1)])
def test_time_varying_graph_uses_its_period_gap(tmp_path, topo, period):
    run = edit_config(write_run(tmp_path / "r"), 'name = "ring"', f'name = "{topo}"')
    run = edit_metrics(run, spectral_gap=0.0, effective_gap=0.0, period_gap=0.875)
    (g,) = group_runs(load_runs([run]))
    # 8 clients: one_peer_exponential repeats every 3 rounds; random_neighbors' gap is per round
    assert plots.gossip_rate(g) == pytest.approx((1 - 0.875) ** (2 / period))
    assert plots.gap_of(g) == pytest.approx([1 - (1 - 0.875) ** (1 / period)])  # its x in the gap figure, not 0
    (ax,) = [a for a in plots.plot_consensus([g]).axes if a.get_visible()]
    (theory,) = _theory_lines(ax)
    y = theory.get_ydata()
    np.testing.assert_allclose(y[period] / y[0], (1 - 0.875) ** 2)  # one period: the period's contraction


def test_server_averaging_has_no_slope_and_complete_graph_none_either(tmp_path):
    runs = load_runs([write_run(tmp_path / "a", "fedavg"), write_run(tmp_path / "b", "dfedsam", "complete")])
    groups = group_runs(runs)
    assert [plots.gossip_rate(g) for g in groups] == [None, 0.0]  # no gap; one exact averaging step
    (ax,) = [a for a in plots.plot_consensus(groups).axes if a.get_visible()]
    assert not _theory_lines(ax)


def test_gap_figure_needs_two_different_gaps(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s", qs=(1,), seeds=(0, 1))
    runs = load_runs([sweep])
    assert "gap" not in plots.default_figures(runs)
    with pytest.raises(DflError, match="needs runs with at least two different effective_gap values .*all have 0.05"):
        plots.plot_gap(runs)
    assert_user_error(["plot", str(sweep), "--figure", "gap"], capsys, "needs runs with at least two different")


def test_paper_style_writes_a_one_column_pdf(tmp_path, capsys):
    import re

    from dfl import cli

    sweep = write_sweep(tmp_path / "s", seeds=(0,), topos=("ring", "torus"))
    assert cli.main(["plot", str(sweep), "--style", "paper"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(sweep / "plots" / f"{n}.pdf") for n in ("consensus", "accuracy", "comm", "gap")]
    for path in written:
        pdf = Path(path).read_bytes()
        box = [float(v) for v in re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", pdf).groups()]
        assert box[2] - box[0] == pytest.approx(72 * plots.STYLES["paper"].width)  # 3.3 in, in points
        assert 72 * 2 < box[3] - box[1] < 72 * 6  # taller than the axes alone: the legend is on the page
    assert cli.main(["plot", str(sweep), "--style", "paper", "--out", str(tmp_path / "f.svg"), "--figure", "comm"]) == 0
    assert (tmp_path / "f.svg").read_text().count('width="237.6pt"') == 1
    assert_user_error(["plot", str(sweep), "--style", "paper", "--out", str(tmp_path / "f.png")], capsys,
                      "--style paper writes vector figures; use a file name ending in .pdf, .svg")
