"""dfl.report and `dfl report` on fake sweeps; the page rendered by headless Chromium."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dfl import cli, report
from dfl.commands import report as report_cmd
from dfl.rundir.groups import group_runs
from dfl.rundir.read import load_run, load_runs

from tests.fake_runs import edit_config, edit_metrics, fake_metrics, write_metrics, write_run, write_sweep
from tests.helpers import assert_user_error, read_metrics

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def dfl_report(*argv: str) -> int:
    return report_cmd.run(cli.build_parser().parse_args(["report", *argv]))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    path = write_sweep(tmp_path_factory.mktemp("rep") / "sweep", algos=("dfedsam", "dfedavg"), qs=(1, 4),
                       seeds=(0, 1), rounds=12)
    write_run(path / "extra-fedavg", "fedavg", rounds=12)  # not listed in sweep.json: not read
    return path


def summary_cells(page: str) -> dict[str, list[str]]:
    body = page.split("<table id='summary'>")[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)[1:]
    out = {}
    for row in rows:
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        out[cells[0]] = cells
    return out


def test_time_to_target_is_first_round_reaching_it(tmp_path):
    run = load_run(write_run(tmp_path / "r", "dfedsam", "ring", 4))
    rows = fake_metrics("dfedsam", "ring", 4, 0)
    first = next(r for r in rows if r["test_acc"] >= 0.85)
    assert report.time_to_target(run, 0.85) == (first["round"], first["comm_mb"])
    assert report.time_to_target(run, 0.99) is None


def test_summary_numbers_per_group(sweep):
    groups = group_runs(load_runs([sweep]))
    assert len(groups) == 4
    rows = {r["label"]: r for r in report.summarize(groups, target=0.85)}
    row = rows["DFedSAM, ring, Q=4"]
    finals = [fake_metrics("dfedsam", "ring", 4, s, 12)[-1]["test_acc"] for s in (0, 1)]
    assert row["final_acc"][0] == pytest.approx(np.mean(finals))
    assert row["final_acc"][1] == pytest.approx(np.std(finals, ddof=1))
    assert row["seeds"] == 2 and row["reached"] == 2
    assert rows["DFedAvg, ring, Q=1"]["reached"] == 0  # DFedAvg tops out at 0.8 (+0.01 for seed 1)


def test_page_has_table_figures_config_and_no_external_resources(sweep):
    page = report.build_report([sweep], target=0.85)
    cells = summary_cells(page)
    assert set(cells) == {f"{a}, ring, Q={q}" for a in ("DFedSAM", "DFedAvg") for q in (1, 4)}
    finals = [fake_metrics("dfedsam", "ring", 4, s, 12)[-1]["test_acc"] for s in (0, 1)]
    assert cells["DFedSAM, ring, Q=4"][3] == f"{100 * np.mean(finals):.2f} ± {100 * np.std(finals, ddof=1):.2f}"
    assert cells["DFedAvg, ring, Q=1"][7] == "not reached"
    assert page.count("<img ") == 4 and page.count("src='data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)
    assert "<pre id='config'>rounds = 10\n[algorithm]\nname = &quot;dfedsam&quot;" in page  # the sweep's source
    assert "<pre id='config1'>seed = 0\nrounds = 12" in page  # the first run's resolved config
    assert "Target test accuracy 85.00% (given)" in page
    assert page.index("<table id='summary'>") < page.index("<figure")  # the table first


def test_default_target_is_90_percent_of_best_final(sweep):
    runs = load_runs([sweep])
    best = max(fake_metrics("dfedsam", t, q, s, 12)[-1]["test_acc"] for t in ("ring",) for q in (1, 4) for s in (0, 1))
    assert report.default_target(runs) == pytest.approx(0.9 * best)
    assert f"Target test accuracy {90 * best:.2f}% (90% of the best" in report.build_report([sweep])


def test_everything_is_escaped(tmp_path):
    run = write_run(tmp_path / "r")
    (run / "summary.json").write_text('{"label": "<script>alert(1)</script> & co"}')
    page = report.build_report([run], title="a <b> title")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<title>a &lt;b&gt; title</title>" in page


def test_missing_figure_is_a_note_not_a_failure(tmp_path):
    runs = [write_run(tmp_path / "a"), write_run(tmp_path / "b", "dfedavg", drop=("consensus",))]
    notes = []
    page = report.build_report(runs, on_note=notes.append)
    assert any("figure 'consensus' not drawn: metric 'consensus' is missing from 1 of 2 runs" in n for n in notes)
    assert page.count("<img ") == 2  # accuracy and comm; gap needs consensus too


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/nope"], "no such directory"),
    (["{tmp}/r", "--target-acc", "80"], "target accuracy must be in (0, 1], got 80; give a fraction, e.g. 0.8"),
    (["{tmp}/r", "--out", "{tmp}/x.pdf"], "use a file name ending in .html"),
])
def test_cli_user_errors(tmp_path, capsys, argv, message):
    write_run(tmp_path / "r")
    assert_user_error(["report", *[a.format(tmp=tmp_path) for a in argv]], capsys, message)


def test_cli_writes_default_out(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s", algos=("dfedsam",), qs=(1,), seeds=(0,))
    assert dfl_report(str(sweep)) == 0
    assert capsys.readouterr().out.strip() == str(sweep / "report.html")
    assert (sweep / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(sweep, tmp_path):
    out = tmp_path / "report.html"
    assert dfl_report(str(sweep), "--out", str(out), "--target-acc", "0.85") == 0
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=90).stdout
    assert "<table id=\"summary\">" in dom
    assert len(re.findall(r"<tr[ >]", dom.split('<table id="summary">')[1].split("</table>")[0])) == 1 + 4
    assert len(re.findall(r"<img ", dom)) == 4
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1000,1400", out.as_uri()],
                   capture_output=True, timeout=90)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.std() > 0.05  # not blank
    # some of the algorithms' colours made it to the screen (the figures were decoded and drawn)
    rose = np.array([0xCC, 0x66, 0x77]) / 255
    assert (np.abs(pixels - rose).max(axis=-1) < 0.06).sum() > 50


# ---------------------------------------------------------------------------- seeds as an axis

FINALS = {"dfedsam": [0.8123, 0.8457, 0.7901], "dfedavg": [0.7034, 0.7311, 0.6892]}  # 3 seeds x 2 variants


def seed_sweep(path: Path, single: bool = True) -> Path:
    """3 seeds of DFedSAM and of DFedAvg with known final accuracies, plus one FedAvg seed."""
    sweep = write_sweep(path, algos=("dfedsam", "dfedavg"), qs=(1,), seeds=(0, 1, 2))
    for algo, finals in FINALS.items():
        for seed, acc in enumerate(finals):
            run = sweep / f"{algo}-ring-q1-s{seed}"
            rows = read_metrics(run)
            rows[-1]["test_acc"] = acc
            write_metrics(run, rows)
    if single:
        write_run(path / "fedavg-s0", "fedavg")
        meta = json.loads((sweep / "sweep.json").read_text())
        meta["runs"].append({"dir": "fedavg-s0", "overrides": {"algorithm.name": "fedavg", "seed": 0}})
        (sweep / "sweep.json").write_text(json.dumps(meta))
    return sweep


def test_mean_std_n_over_seeds_equal_numpy(tmp_path):
    rows = {r["label"]: r for r in report.summarize(group_runs(load_runs([seed_sweep(tmp_path / "s")])), 0.85)}
    assert set(rows) == {"DFedSAM, ring, Q=1", "DFedAvg, ring, Q=1", "FedAvg"}
    for label, algo in (("DFedSAM, ring, Q=1", "dfedsam"), ("DFedAvg, ring, Q=1", "dfedavg")):
        v = np.array(FINALS[algo])
        assert rows[label]["final_acc"] == (v.mean(), v.std(ddof=1), 3)
        assert rows[label]["seeds"] == 3
    mean, std, n = rows["FedAvg"]["final_acc"]
    assert n == 1 and mean == fake_metrics("fedavg", "ring", 1, 0)[-1]["test_acc"] and np.isnan(std)


def test_difference_to_the_default_baseline(tmp_path):
    page = report.build_report([seed_sweep(tmp_path / "s")], target=0.85)
    cells = summary_cells(page)
    assert list(cells) == ["DFedSAM, ring, Q=1", "DFedAvg, ring, Q=1", "FedAvg"]
    sam, avg = np.array(FINALS["dfedsam"]), np.array(FINALS["dfedavg"])
    delta = sam.mean() - avg.mean()
    se = np.sqrt(sam.var(ddof=1) / 3 + avg.var(ddof=1) / 3)
    assert cells["DFedSAM, ring, Q=1"][1:5] == [
        "3", "10", f"{100 * sam.mean():.2f} ± {100 * sam.std(ddof=1):.2f}", f"+{100 * delta:.2f} ± {100 * se:.2f}"]
    assert cells["DFedAvg, ring, Q=1"][4] == "baseline"  # DFedAvg is the default baseline
    fedavg = fake_metrics("fedavg", "ring", 1, 0)[-1]["test_acc"]
    assert cells["FedAvg"][1:5] == ["1", "10", f"{100 * fedavg:.2f}", f"{100 * (fedavg - avg.mean()):+.2f}"]
    assert re.search(r"<tr class='baseline'><td><span [^>]*></span>DFedAvg, ring, Q=1</td>", page)
    assert "Baseline: DFedAvg, ring, Q=1;" in page


def test_baseline_option_and_fallbacks(tmp_path):
    sweep = seed_sweep(tmp_path / "s")
    cells = summary_cells(report.build_report([sweep], target=0.85, baseline="dfedsam, ring, q=1"))
    sam, avg = np.mean(FINALS["dfedsam"]), np.mean(FINALS["dfedavg"])
    assert cells["DFedSAM, ring, Q=1"][4] == "baseline"
    assert cells["DFedAvg, ring, Q=1"][4].startswith(f"{100 * (avg - sam):+.2f} ± ")
    groups = group_runs(load_runs([sweep]))
    assert report.pick_baseline([g for g in groups if g.algorithm != "dfedavg"]).label == "FedAvg"
    assert report.pick_baseline([g for g in groups if g.algorithm == "dfedsam"]).label == "DFedSAM, ring, Q=1"


def test_markdown_table_is_the_html_table(tmp_path, capsys):
    sweep = seed_sweep(tmp_path / "s")
    assert dfl_report(str(sweep), "--markdown", "--target-acc", "0.85") == 0
    out = capsys.readouterr().out
    assert not (sweep / "report.html").exists()  # --markdown alone writes no page
    lines = out.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 3 and lines[len(table)] == ""
    assert table[1] == "| --- " + "| ---: " * 11 + "|"
    md = {cells[0]: cells for cells in ([c.strip() for c in t.strip("|").split("|")] for t in table[2:])}
    assert md == summary_cells(report.build_report([sweep], target=0.85))
    assert [c.strip() for c in table[0].strip("|").split("|")][:5] == [
        "variant", "n", "rounds", "final acc. %", "Δ final acc. vs baseline (pp)"]
    assert "Baseline: DFedAvg, ring, Q=1;" in lines[-1] and "sample std over the n seeds" in lines[-1]
    assert dfl_report(str(sweep), "--markdown", "--out", str(tmp_path / "r.html")) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_markdown_escapes_pipes():
    row = {"label": "a | b", "seeds": 1, "rounds": 2.0, "final_acc": (0.5, np.nan, 1), "best_acc": (0.5, np.nan, 1),
           "final_local_acc": (0.4, np.nan, 1), "reached": 0, "rounds_to_target": (np.nan, np.nan, 0),
           "mb_to_target": (np.nan, np.nan, 0), "final_consensus": (0.1, np.nan, 1),
           "spectral_gap": (np.nan, np.nan, 0), "wall_s": (1.0, np.nan, 1), "baseline": True,
           "delta_acc": (0.0, np.nan)}
    line = report.markdown_table([row], 0.9).splitlines()[2]
    assert line == "| a \\| b | 1 | 2 | 50.00 | baseline | 50.00 | 40.00 | not reached | not reached | 0.1 | — | 1 |"


def test_unknown_baseline_is_one_line_with_the_choices(tmp_path, capsys):
    sweep = seed_sweep(tmp_path / "s", single=False)
    err = assert_user_error(["report", str(sweep), "--baseline", "DFedSAM, ring, Q=2"], capsys)
    assert err == ("dfl: error: --baseline 'DFedSAM, ring, Q=2': no such variant (did you mean "
                   "'DFedSAM, ring, Q=1'?); choose one of 'DFedSAM, ring, Q=1'; 'DFedAvg, ring, Q=1'")


# ---------------------------------------------------------------------------- figures of the page


def test_figures_have_captions_and_the_table_the_figures_colours(sweep):
    from matplotlib.colors import to_hex

    from dfl import plots

    page = report.build_report([sweep], target=0.85)
    figs = re.findall(r"<figure id='fig-(\w+)'><img alt='[^']*' style='width:(\d+)px'.*?<figcaption>(.*?)</figcaption>",
                      page, re.S)
    assert [f[0] for f in figs] == ["consensus", "accuracy", "comm", "gap"]
    for name, width, caption in figs:
        assert "Look " in caption
        assert "All runs: digits, 8 clients, dirichlet α=0.3, cnn, K=5, ring; 2 seeds" in caption
        assert 650 <= int(width) <= 1150  # sized to the page (max-width 1200px), not a thumbnail
    swatches = {label: colour for colour, label in
                re.findall(r"<span class='sw' style='background:(#[0-9A-Fa-f]{6})'></span>([^<]+)</td>", page)}
    groups = group_runs(load_runs([sweep]))
    assert len(swatches) == 4
    fig = plots.plot_accuracy(groups)
    lines = {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].get_lines()}
    look = plots.Look(groups)
    for g in groups:
        assert swatches[g.label].lower() == lines[look.label(g)] == plots.ALGO_COLORS[g.algorithm].lower()


def test_time_varying_graph_shows_its_period_gap(tmp_path):
    run = edit_config(write_run(tmp_path / "r", summary=False), '"ring"', '"one_peer_exponential"')
    edit_metrics(run, spectral_gap=0.0, period_gap=0.875)
    (cells,) = summary_cells(report.build_report([run])).values()
    assert cells[0] == "DFedSAM, one_peer_exponential, Q=1" and cells[10] == "0.875"  # not one matching's 0


def test_a_run_written_before_a_key_existed_groups_with_one_that_has_its_default(tmp_path):
    # seed 1 of DFedSAM lacks topology.mixing in its config.toml (as a run written before a key
    # existed lacks that key): it still belongs to its variant, the key taking its default
    sweep = seed_sweep(tmp_path / "s", single=False)
    old = sweep / "dfedsam-ring-q1-s1" / "config.toml"
    text = old.read_text()
    assert 'mixing = "metropolis"' in text
    old.write_text(text.replace('mixing = "metropolis"\n', ""))
    assert sorted(len(g.runs) for g in group_runs(load_runs([sweep]))) == [3, 3]
    # a real difference (not a default) still splits the variant
    old.write_text(text.replace('mixing = "metropolis"', 'mixing = "max_degree"'))
    assert sorted(len(g.runs) for g in group_runs(load_runs([sweep]))) == [1, 2, 3]
