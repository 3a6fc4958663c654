"""[logging]: TensorBoard, MLflow and W&B, each read back with its own library's reader
(TensorBoard's EventAccumulator, MlflowClient on a file store, `wandb leet inspect` of the
offline run file) and checked against metrics.jsonl. No network: W&B offline, MLflow on files."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dfl import tracking
from dfl.cli import main
from dfl.config import ConfigError, Config, read_toml
from tests.helpers import assert_user_error, read_metrics, write_config

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Trackers write under tmp_path only and never call home; each test checks trackers anew."""
    for key, value in {"WANDB_CONFIG_DIR": "wandb-config", "WANDB_CACHE_DIR": "wandb-cache",
                       "WANDB_DATA_DIR": "wandb-data"}.items():
        monkeypatch.setenv(key, str(tmp_path / value))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setattr(tracking.session, "_checked", set())


rows = read_metrics


def numeric(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "round" and isinstance(v, (int, float)) and math.isfinite(v)}


def config_file(tmp_path: Path, **changes) -> Path:
    return write_config(tmp_path / "c.toml", **{"rounds": 3, "engine.threads": 1, **changes})


def mlflow_client(uri: str):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def wandb_records(out: Path) -> list[dict]:
    """Every record of the run's offline .wandb file, as W&B's own reader prints them."""
    (log,) = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    text = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------------------- config


def test_logging_is_off_by_default_and_validated():
    lg = Config().logging
    assert (lg.tensorboard, lg.mlflow, lg.wandb, lg.wandb_project, lg.wandb_group) == (False, "", "", "dfl", "")
    with pytest.raises(ConfigError, match=r"^logging\.wandb: must be one of '', 'offline', 'online', got 'yes'$"):
        Config().replace(**{"logging.wandb": "yes"})
    with pytest.raises(ConfigError, match=r"logging\.tensorboard: must be true or false"):
        Config().replace(**{"logging.tensorboard": "yes"})
    with pytest.raises(ConfigError, match=r"did you mean 'logging.tensorboard'"):
        Config().replace(**{"logging.tensorbord": True})


# ---------------------------------------------------------------------------- one run, all three


def test_every_tracker_records_what_metrics_jsonl_holds(tmp_path):
    out, mlruns = tmp_path / "run", (tmp_path / "mlruns").as_uri()
    assert main(["run", str(config_file(tmp_path)), "--out", str(out), "--quiet",
                 "--set", "logging.tensorboard=true", "--set", f"logging.mlflow={mlruns}",
                 "--set", "logging.wandb=offline", "--set", "logging.wandb_project=proj"]) == 0
    want = rows(out)
    assert [r["round"] for r in want] == [1, 2, 3]
    flat = tracking.flat_config(Config().replace(**{"rounds": 3}))
    cfg = read_toml(out / "config.toml")

    # TensorBoard: a scalar per metric per round, the config as hyperparameters, the figures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    for key in numeric(want[0]):
        got = ea.Scalars(key)
        assert [e.step for e in got] == [1, 2, 3], key
        assert [e.value for e in got] == pytest.approx([r[key] for r in want], rel=1e-6, abs=1e-7), key
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["algorithm.name"].string_value == "dfedavg" and hp["local.lr"].number_value == pytest.approx(0.1)
    assert hp["logging.tensorboard"].number_value == 1 and set(hp) >= set(flat) - {"local.optimizer"}
    assert "_hparams_/session_end_info" in content
    assert {t for t in ea.Tags()["images"]} == {"figures/consensus", "figures/accuracy", "figures/comm"}
    assert ea.Images("figures/consensus")[0].step == 3

    # MLflow: one run in an experiment named after the run directory
    client = mlflow_client(mlruns)
    exp = client.get_experiment_by_name("run")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "DFedAvg, ring, Q=1"
    assert run.data.params["algorithm.name"] == "dfedavg" and run.data.params["local.optimizer"] == "sgd"
    assert run.data.params["data.num_clients"] == str(cfg["data"]["num_clients"])
    assert run.data.tags["dfl.run_dir"] == str(out.resolve()) and run.data.tags["dfl.seed"] == "0"
    for key in numeric(want[0]):
        hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in hist] == [(r["round"], pytest.approx(r[key])) for r in want], key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts >= {"config.toml", "summary.json", "manifest.json", "metrics.jsonl", "figures"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        "figures/consensus.png", "figures/accuracy.png", "figures/comm.png"}
    assert json.loads((out / "tracking.json").read_text())["mlflow_run_id"] == run.info.run_id

    # W&B (offline): config, a history row per round, the files; read back by W&B's own reader
    records = wandb_records(out)
    (start,) = [r["run"] for r in records if r["type"] == "run"]
    assert start["project"] == "proj" and start["display_name"] == "DFedAvg, ring, Q=1" and "run_group" not in start
    assert start["config"]["update"]["algorithm"]["name"] == "dfedavg"
    assert start["config"]["update"]["data"] == cfg["data"]
    history = {r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"}
    assert sorted(history) == [1, 2, 3]
    for r in want:
        for key, value in numeric(r).items():
            assert history[r["round"]][key] == pytest.approx(value), key
    assert {"figures/consensus._type", "figures/comm._type"} <= set(history[3])
    files = {f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]}
    assert {"config.toml", "summary.json", "manifest.json", "metrics.jsonl"} <= files
    assert any(r["type"] == "exit" for r in records)


def test_trackers_off_write_nothing_of_theirs(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(config_file(tmp_path, rounds=2)), "--out", str(out), "--quiet"]) == 0
    assert not {"tracking.json", "tensorboard", "wandb", "plots"} & {p.name for p in out.iterdir()}


# ---------------------------------------------------------------------------- sweeps


def test_a_sweep_is_one_mlflow_experiment_with_nested_runs_and_one_wandb_group(tmp_path):
    p = write_config(tmp_path / "s.toml", {"seed": [0, 1]}, rounds=2, **{"engine.threads": 1})
    out, mlruns = tmp_path / "sw", (tmp_path / "mlruns").as_uri()
    assert main(["sweep", str(p), "--out", str(out), "--quiet", "--set", f"logging.mlflow={mlruns}",
                 "--set", "logging.wandb=offline"]) == 0
    client = mlflow_client(mlruns)
    exp = client.get_experiment_by_name("sw")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r is not parent), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in children] == ["000-seed=0", "001-seed=1"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.data.tags["dfl.sweep"] == "sw"
               for r in children)
    assert [r.data.params["seed"] for r in children] == ["0", "1"]
    assert parent.info.status == "FINISHED" and [r.info.status for r in children] == ["FINISHED"] * 2
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"sweep.json"}
    for variant in ("000-seed=0", "001-seed=1"):
        (start,) = [r["run"] for r in wandb_records(out / variant) if r["type"] == "run"]
        assert start["run_group"] == "sw" and start["display_name"] == variant


def test_resume_continues_the_same_tracker_runs(tmp_path, monkeypatch):
    from dfl.progress import Progress

    out, mlruns = tmp_path / "run", (tmp_path / "mlruns").as_uri()
    update = Progress.update

    def sigterm_at_round_2(self, round_, row):
        update(self, round_, row)
        if round_ == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the round ends, a checkpoint, then exit 143

    monkeypatch.setattr(Progress, "update", sigterm_at_round_2)
    assert main(["run", str(config_file(tmp_path, rounds=3)), "--out", str(out), "--quiet",
                 "--set", f"logging.mlflow={mlruns}", "--set", "logging.tensorboard=true"]) == 143
    client = mlflow_client(mlruns)
    run_id = json.loads((out / "tracking.json").read_text())["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    monkeypatch.setattr(Progress, "update", update)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    (run,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    want = rows(out)
    hist = sorted(client.get_metric_history(run_id, "test_acc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in hist] == [(r["round"], pytest.approx(r["test_acc"])) for r in want]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in ea.Scalars("test_acc")] == [
        (r["round"], r["test_acc"]) for r in want]


# ---------------------------------------------------------------------------- failing fast


@pytest.mark.parametrize("key, value, module", [
    ("logging.tensorboard", "true", "tensorboard"),
    ("logging.mlflow", "file:///tmp/x", "mlflow"),
    ("logging.wandb", "offline", "wandb"),
])
def test_a_tracker_not_installed_is_one_line_exit_2_before_anything_is_written(tmp_path, capsys, monkeypatch,
                                                                              key, value, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "run"
    err = assert_user_error(["run", str(config_file(tmp_path)), "--out", str(out), "--quiet", "--set", f"{key}={value}"],
                            capsys, 'pip install "dfl[tracking]"')
    assert err.startswith(f"dfl: error: {key}:"), err
    assert not out.exists()


def test_an_unreachable_mlflow_server_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert_user_error(["run", str(config_file(tmp_path)), "--out", str(out), "--quiet",
                       "--set", "logging.mlflow=http://127.0.0.1:9"], capsys,
                      "logging.mlflow: cannot use the tracking URI 'http://127.0.0.1:9'")
    assert not out.exists()


def test_wandb_online_needs_a_key_and_a_server(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    out = tmp_path / "run"
    args = ["run", str(config_file(tmp_path)), "--out", str(out), "--quiet", "--set", "logging.wandb=online"]
    assert_user_error(args, capsys, "no W&B API key", 'logging.wandb = "offline"')
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert_user_error(args, capsys, "cannot reach http://127.0.0.1:9")
    assert not out.exists()


def test_a_tracker_failing_during_a_run_is_dropped_with_a_warning(tmp_path, capsys):
    class Broken:
        closed = ""

        def log_row(self, row):
            raise ConnectionError("server gone\nmore")

        def close(self, status):
            Broken.closed = status

    class Fine:
        logged: list = []

        def log_row(self, row):
            self.logged.append(row["round"])

    fine = Fine()
    trackers = tracking.Trackers(tmp_path, [Broken(), fine])
    trackers.log_row({"round": 1, "test_acc": 0.5})
    trackers.log_row({"round": 2, "test_acc": 0.6})
    assert fine.logged == [1, 2] and Broken.closed == "FAILED"
    err = capsys.readouterr().err.strip()
    assert err == "dfl: warning: Broken stopped (round 1: server gone); the run goes on without it"


def test_row_numbers_keep_finite_numbers_only():
    import numpy as np

    row = {"round": 3, "test_acc": 0.5, "n": np.int64(4), "x": np.float32(0.25), "flag": True,
           "sharpness": None, "nan": math.nan, "label": "a"}
    assert tracking.row_numbers(row) == {"test_acc": 0.5, "n": 4.0, "x": 0.25}
