"""dfl.run (the Python API), dfl.load_runs (runs as a DataFrame, checked against metrics.jsonl)
and dfl.summarize (checked against `dfl report`'s seed table), Flower runs included."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

import dfl
from dfl.config import read_toml, to_dict
from dfl.errors import DflError
from tests.conftest import small_config
from tests.helpers import read_metrics

pd = pytest.importorskip("pandas")
ROOT = Path(__file__).resolve().parents[1]


def sweep_config() -> dict:
    """2 algorithms x 2 seeds, rounds 3 evaluated at 2 and 3."""
    raw = to_dict(small_config(rounds=3, eval_every=2, **{"engine.threads": 1}))
    raw["seed"] = [0, 1]
    raw["algorithm"]["name"] = ["dfedavg", "dfedsam"]
    return raw


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sweep") / "sw"
    histories = dfl.run(sweep_config(), out=out, quiet=True)
    return out, histories


# ---------------------------------------------------------------------------- dfl.run


def test_run_returns_the_history_and_writes_the_run_directory(tmp_path):
    cfg = small_config(**{"engine.threads": 1})
    history = dfl.run(cfg, out=tmp_path / "a", quiet=True)
    assert [r["round"] for r in history] == [1, 2]
    assert history == read_metrics(tmp_path / "a")
    assert {"config.toml", "summary.json", "manifest.json"} <= {p.name for p in (tmp_path / "a").iterdir()}
    with pytest.raises(DflError, match="directory exists and is not empty"):
        dfl.run(cfg, out=tmp_path / "a", quiet=True)
    again = dfl.run(to_dict(cfg), out=tmp_path / "a", overwrite=True, quiet=True,
                    overrides={"rounds": 3, "local.lr": 0.05})
    assert [r["round"] for r in again] == [1, 2, 3]
    assert "lr = 0.05" in (tmp_path / "a" / "config.toml").read_text()
    with pytest.raises(DflError, match=r"^local\.lr: must be > 0, got -1.0$"):
        dfl.run(cfg, out=tmp_path / "b", overrides={"local.lr": -1})
    assert not (tmp_path / "b").exists()


def test_run_of_a_list_valued_config_is_a_sweep(sweep):
    out, histories = sweep
    assert [name[:4] for name in sorted(histories)] == ["000-", "001-", "002-", "003-"]
    assert (out / "sweep.json").is_file()
    for name, history in histories.items():
        assert [r["round"] for r in history] == [2, 3] and history == read_metrics(out / name)


def test_import_dfl_stays_light():
    code = "import dfl, sys; print(sorted(m for m in ('torch', 'pandas', 'dfl.api', 'dfl.config') if m in sys.modules))"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert got.strip() == "[]"


# ---------------------------------------------------------------------------- dfl.load_runs


def test_load_runs_holds_every_metrics_line(sweep):
    out, histories = sweep
    df = dfl.load_runs(out)
    assert len(df) == 8 and list(df.columns[:5]) == ["run", "label", "variant", "seed", "runtime"]
    swept = list(df.columns[5:df.columns.get_loc("round")])
    assert swept == ["local.optimizer", "algorithm.name"]  # what differs, the seed aside; dfedsam brings sam
    assert df["round"].dtype.kind == "i" and set(df["runtime"]) == {"dfl"}
    for name in histories:
        part = df[df["run"] == str(out / name)]
        want = read_metrics(out / name)
        assert len(part) == len(want)
        for (_, got), row in zip(part.iterrows(), want):
            for key, value in row.items():
                assert got[key] == pytest.approx(value) if value is not None else math.isnan(got[key]), key
            cfg = read_toml(out / name / "config.toml")
            assert got["seed"] == cfg["seed"] and got["algorithm.name"] == cfg["algorithm"]["name"]
    assert list(df["variant"].unique()) == ["DFedAvg, ring, Q=1", "DFedSAM, ring, Q=1"]


def test_load_runs_takes_runs_lists_and_parents_and_says_what_is_wrong(sweep, tmp_path, monkeypatch):
    out, histories = sweep
    first, second = sorted(histories)[:2]
    one = dfl.load_runs(out / first)
    assert len(one) == 2 and "algorithm.name" not in one.columns  # nothing differs within one run
    both = dfl.load_runs([out / first, str(out / second)])
    assert both["run"].nunique() == 2
    assert len(dfl.load_runs(out.parent)) == 8  # a directory holding a sweep
    with pytest.raises(DflError, match="no such directory"):
        dfl.load_runs(tmp_path / "nothing")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(DflError, match=r'pip install "dfl\[analysis\]"'):
        dfl.load_runs(out)


# ---------------------------------------------------------------------------- dfl.summarize


def test_summarize_gives_dfl_reports_numbers(sweep):
    from dfl import report

    out, _ = sweep
    s = dfl.summarize(dfl.load_runs(out))
    rows = report.summary([out]).rows
    assert list(s.index) == [r["label"] for r in rows]
    for r in rows:
        got = s.loc[r["label"]]
        assert got["n"] == r["seeds"] == 2
        for col, key in (("final_acc", "test_acc"), ("final_local_acc", "local_test_acc"),
                         ("final_consensus", "consensus"), ("spectral_gap", "spectral_gap"), ("wall_s", "wall_s")):
            mean, std, n = r[col]
            assert (got[f"{key}_mean"], got[f"{key}_std"]) == (pytest.approx(mean), pytest.approx(std)), key
    assert (s["spectral_gap_std"] == 0.0).all()  # equal over seeds: exactly 0


def test_summarize_by_any_column_and_at_a_round(sweep):
    out, _ = sweep
    df = dfl.load_runs(out)
    s = dfl.summarize(df, by=["seed"], metrics=["test_acc"], at=2)
    assert list(s.index) == [0, 1] and list(s.columns) == ["n", "test_acc_mean", "test_acc_std"]
    at2 = df[(df["round"] == 2) & (df["seed"] == 1)]["test_acc"]
    assert s.loc[1, "test_acc_mean"] == pytest.approx(at2.mean())
    assert s.loc[1, "test_acc_std"] == pytest.approx(at2.std())
    one = dfl.summarize(df[df["seed"] == 0])
    assert (one["n"] == 1).all() and one["test_acc_std"].isna().all()
    with pytest.raises(DflError, match="no column 'topology'"):
        dfl.summarize(df, by=["topology"])
    with pytest.raises(DflError, match="no run has an evaluated round 1"):
        dfl.summarize(df, at=1)
    with pytest.raises(DflError, match='at must be "final" or a round number'):
        dfl.summarize(df, at="best")


def test_the_example_reproduces_dfl_reports_markdown_table(sweep):
    from dfl.report import build_markdown

    out, _ = sweep
    spec = importlib.util.spec_from_file_location("seed_table", ROOT / "examples" / "seed_table.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    want = build_markdown([out]).split("\n\n")[0]
    assert example.seed_table(dfl.load_runs(out)) == want


# ---------------------------------------------------------------------------- Flower runs


def test_flower_runs_are_rows_like_any_other(sweep, tmp_path):
    pytest.importorskip("flwr")
    from tests.flower_helpers import run_in_memory, task_identity

    with task_identity():
        run_in_memory(tmp_path, "rounds=2 data.num_clients=3", 3)
    run = tmp_path / "run"
    df = dfl.load_runs([run, sweep[0]])
    part = df[df["runtime"] == "flower"]
    assert part["run"].unique().tolist() == [str(run)] and part["label"].iloc[0].endswith("(Flower)")
    for (_, got), row in zip(part.iterrows(), read_metrics(run)):
        for key, value in row.items():
            assert got[key] == pytest.approx(value), key
    assert len(df) == 8 + len(read_metrics(run))
