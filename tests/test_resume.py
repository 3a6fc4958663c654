"""Surviving a killed run: kill -9 then `dfl run --resume DIR` gives the uninterrupted result;
metrics.jsonl never keeps a half line; checkpoints are atomic; a corrupt one is reported."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfl import results
from dfl.cli import main
from tests.conftest import small_toml

ROOT = Path(__file__).resolve().parent.parent

CONFIG = small_toml(rounds=12, **{"local.local_steps": 5, "faults.dropout": 0.2, "faults.link_failure": 0.2,
                                   "faults.straggler": 0.3, "engine.threads": 1, "metrics.checkpoint_every": 1})
COMPARE = ("round", "test_acc", "test_loss", "consensus", "train_loss", "local_test_acc", "active_clients",
           "live_edges", "spectral_gap", "stragglers", "comm_mb")


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(CONFIG)
    return p


def rows(path):
    return [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]


def same_metrics(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k in COMPARE:
            assert ra[k] == pytest.approx(rb[k], abs=1e-6), (ra["round"], k)


def test_kill_9_then_resume_gives_the_uninterrupted_metrics(config, tmp_path):
    part = tmp_path / "part"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dfl", "run", str(config), "--out", str(part), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = part / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and metrics.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = len(metrics.read_bytes().splitlines())
    assert 2 <= killed_at < 12

    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    full = tmp_path / "full"
    assert main(["run", str(config), "--out", str(full), "--quiet"]) == 0
    same_metrics(rows(full), rows(part))
    assert results.load_checkpoint(part)["round"] == 12


def interrupted_run(config, tmp_path, stop_after=2):
    """A run of `config` stopped (by an exception) after `stop_after` rounds, checkpointed each round."""
    from dfl.config import load_config
    from dfl.simulation import Simulation

    out = tmp_path / "part"
    sim = Simulation(load_config(config).replace(rounds=4))
    results.prepare(out)
    writer = results.RunDir(out, sim.cfg)

    class Stop(Exception):
        pass

    def on_round(s, row):
        writer(s, row)
        if s.round == stop_after:
            raise Stop

    with pytest.raises(Stop):
        sim.run(on_round)
    return out


def test_resume_drops_a_half_written_metrics_line(config, tmp_path):
    out = interrupted_run(config, tmp_path)
    with open(out / "metrics.jsonl", "a") as fh:  # killed in the middle of the next line
        fh.write('{"round": 3, "test_acc": 0.')
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert [r["round"] for r in rows(out)] == [1, 2, 3, 4]


def test_resume_rewrites_lines_written_after_the_last_checkpoint(config, tmp_path):
    out = interrupted_run(config, tmp_path)
    extra = rows(out)[-1] | {"round": 3, "test_acc": -1.0}
    with open(out / "metrics.jsonl", "a") as fh:  # a line whose checkpoint never made it to disk
        fh.write(json.dumps(extra) + "\n")
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    got = rows(out)
    assert [r["round"] for r in got] == [1, 2, 3, 4] and got[2]["test_acc"] >= 0


def test_checkpoint_write_is_atomic(config, tmp_path, monkeypatch):
    out = interrupted_run(config, tmp_path)
    good = (out / results.CHECKPOINT).read_bytes()

    def half_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(results.torch, "save", half_save)

    class FakeSim:
        def state_dict(self):
            return {}

    with pytest.raises(OSError):
        results.RunDir(out, None, label="x", resume=True).checkpoint(FakeSim())
    assert (out / results.CHECKPOINT).read_bytes() == good
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    assert results.load_checkpoint(out)["round"] == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not-a-checkpoint", "wrong-shape"])
def test_corrupt_checkpoint_is_reported_not_loaded(config, tmp_path, capsys, damage):
    out = interrupted_run(config, tmp_path)
    ckpt = out / results.CHECKPOINT
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    else:
        state = torch.load(ckpt, weights_only=False)
        state["bank"] = state["bank"][:3]
        torch.save(state, ckpt)
    before = (out / "metrics.jsonl").read_bytes()
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "Traceback" not in err, err
    assert (out / "metrics.jsonl").read_bytes() == before  # nothing rewritten


def test_resume_of_a_finished_run_changes_nothing(config, tmp_path):
    out = interrupted_run(config, tmp_path)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    first = rows(out)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    same_metrics(first, rows(out))
