"""dfl.rundir and dfl.plots on fake run and sweep directories with known metrics."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dfl import plots
from dfl.config import dumps_toml
from dfl.errors import DflError
from dfl.rundir import group_runs, load_run, load_runs

ALGOS = {"dfedsam": "DFedSAM", "dfedavg": "DFedAvg", "fedavg": "FedAvg"}
GAPS = {"ring": 0.05, "torus": 0.2, "complete": 1.0}


def fake_metrics(algo: str, topo: str, q: int, seed: int, rounds: int = 10, extra: tuple[str, ...] = ()) -> list[dict]:
    """Known, distinct curves per (algorithm, topology, Q, seed)."""
    gap = GAPS[topo]
    eff = 1 - (1 - gap) ** q
    central = algo == "fedavg"
    rows = []
    for r in range(1, rounds + 1):
        acc = (0.9 if algo == "dfedsam" else 0.8) * (1 - math.exp(-r * (0.2 + eff))) + 0.01 * seed
        row = {
            "round": r, "test_acc": acc, "test_loss": 1 - acc, "local_test_acc": acc - 0.05,
            "local_test_acc_std": 0.02, "train_loss": 1.2 - acc,
            "consensus": 0.0 if central else (1 + 0.5 * seed) * math.exp(-eff * r) * (2 if algo == "dfedavg" else 1),
            "spectral_gap": None if central else gap, "effective_gap": None if central else eff,
            "comm_mb": r * (0.8 if central else 0.4 * q * 2), "wall_s": 0.5 * r,
        }
        if central:
            row["drift"] = 0.1 / r
        if "hessian_max_eig" in extra:
            row["hessian_max_eig"] = 50.0 / r + seed if r % 2 == 0 else None
        rows.append(row)
    return rows


def write_run(path: Path, algo: str = "dfedsam", topo: str = "ring", q: int = 1, seed: int = 0, rounds: int = 10,
              extra: tuple[str, ...] = (), drop: tuple[str, ...] = (), summary: bool = True) -> Path:
    """A run directory as `dfl run` writes it."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"seed": seed, "rounds": rounds, "eval_every": 1, "name": "",
           "data": {"name": "digits", "num_clients": 8, "partition": "dirichlet", "alpha": 0.3},
           "model": {"name": "cnn"}, "local": {"optimizer": "sam", "lr": 0.1, "rho": 0.05},
           "algorithm": {"name": algo, "gossip_steps": q, "participation": 1.0},
           "topology": {"name": topo, "mixing": "metropolis"}, "engine": {"backend": "vectorized", "device": "cpu"}}
    (path / "config.toml").write_text(dumps_toml(cfg))
    rows = fake_metrics(algo, topo, q, seed, rounds, extra)
    rows = [{k: v for k, v in row.items() if k not in drop} for row in rows]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    label = ALGOS[algo] if algo == "fedavg" else f"{ALGOS[algo]}, {topo}, Q={q}"
    if summary:
        best = max(rows, key=lambda row: row["test_acc"])
        (path / "summary.json").write_text(json.dumps({"label": label, "final": rows[-1], "rounds": rounds,
                                                       "best": {"test_acc": best["test_acc"], "round": best["round"]}}))
    (path / "manifest.json").write_text(json.dumps({"dfl_version": "0.1.0", "device": "cpu", "seed": seed,
                                                    "peak_memory_mb": 123.0}))
    return path


def write_sweep(path: Path, algos=("dfedsam", "dfedavg"), qs=(1, 4), seeds=(0, 1), topos=("ring",), **kw) -> Path:
    """A sweep directory: sweep.json and one run dir per (algorithm, topology, Q, seed)."""
    runs = []
    for algo in algos:
        for topo in topos:
            for q in qs:
                for seed in seeds:
                    name = f"{algo}-{topo}-q{q}-s{seed}"
                    write_run(path / name, algo, topo, q, seed, **kw)
                    runs.append({"dir": name, "overrides": {"algorithm.name": algo, "topology.name": topo,
                                                            "algorithm.gossip_steps": q, "seed": seed}})
    src = path / "source.toml"
    src.write_text('rounds = 10\n[algorithm]\nname = "dfedsam"\n')
    (path / "sweep.json").write_text(json.dumps({"config": str(src), "runs": runs, "axes": {
        "algorithm.name": list(algos), "topology.name": list(topos), "algorithm.gossip_steps": list(qs),
        "seed": list(seeds)}}))
    return path


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


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
    (b / "config.toml").write_text((b / "config.toml").read_text().replace("lr = 0.1", "lr = 0.05"))
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
    assert fig.get_figwidth() == pytest.approx(plots.DOUBLE_W)


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
    line = lines_by_label(ax)["DFedSAM, ring, Q=8"]
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


def test_paper_size_and_fonts(tmp_path):
    fig = plots.plot_accuracy_vs_comm(load_runs([write_run(tmp_path / "r")]))
    assert fig.get_figwidth() == pytest.approx(plots.SINGLE_W)
    ax = fig.axes[0]
    assert ax.xaxis.label.get_fontsize() == plots.FONT
    assert ax.get_xlabel() == plots.METRIC_LABELS["comm_mb"]


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
