"""dfl.report and `dfl report` on fake sweeps; the page rendered by headless Chromium."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dfl import cli, report
from dfl.commands import report as report_cmd
from dfl.rundir import group_runs, load_run, load_runs

try:
    from tests.test_plots import fake_metrics, write_run, write_sweep
except ImportError:  # pragma: no cover - tests/ on sys.path without being a package
    from test_plots import fake_metrics, write_run, write_sweep

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
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
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
    assert cells["DFedAvg, ring, Q=1"][6] == "not reached"
    assert page.count("<img ") == 4 and page.count("src='data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)
    assert "<pre id='config'>rounds = 10\n[algorithm]\nname = &quot;dfedsam&quot;" in page  # the sweep's source
    assert "<pre id='config1'>seed = 0\nrounds = 12" in page  # the first run's resolved config
    assert "Target test accuracy 85.00% (given)" in page


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
    assert cli.main(["report", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


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
    assert len(re.findall(r"<tr>", dom.split('<table id="summary">')[1].split("</table>")[0])) == 1 + 4
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
