"""Surviving a killed run: kill -9 then `dfl run --resume DIR` gives the uninterrupted result;
metrics.jsonl never keeps a half line; checkpoints are atomic; a corrupt one is reported.
With the default config too (checkpoint after the first round, then by wall time); SIGTERM /
SIGINT write a checkpoint and exit 143 / 130 with one line saying how to resume."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfl.cli import main
from dfl.rundir import write
from dfl.rundir.checkpoint import CHECKPOINT, load_checkpoint
from tests import helpers
from tests.helpers import assert_same_history, assert_user_error, read_metrics, write_config

ROOT = Path(__file__).resolve().parent.parent

CONFIG = {"rounds": 12, "local.local_steps": 5, "faults.dropout": 0.2, "faults.link_failure": 0.2,
          "faults.straggler": 0.3, "engine.threads": 1, "metrics.checkpoint_every": 1}
# the default checkpoint cadence (metrics.checkpoint_every = 0: first round, then every few minutes)
DEFAULT_CADENCE = {"rounds": 12, "local.local_steps": 5, "faults.dropout": 0.2, "faults.straggler": 0.3,
                   "engine.threads": 1}
COMPARE = ("round", "test_acc", "test_loss", "consensus", "train_loss", "local_test_acc", "active_clients",
           "live_edges", "spectral_gap", "stragglers", "comm_mb")


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "c.toml", **CONFIG)


rows = read_metrics


def same_metrics(a, b):
    assert_same_history(a, b, tol=1e-6, keys=COMPARE)


def start_run(config, out):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dfl", "run", str(config), "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def signal_after(proc, out, rows, signum):
    """Send `signum` to the run once metrics.jsonl has `rows` lines; returns the exit code."""
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and metrics.read_bytes().count(b"\n") >= rows:
                break
            time.sleep(0.002)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signum)
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_then_resume_gives_the_uninterrupted_metrics(config, tmp_path):
    part = tmp_path / "part"
    assert signal_after(start_run(config, part), part, 2, signal.SIGKILL) == -signal.SIGKILL
    killed_at = len((part / "metrics.jsonl").read_bytes().splitlines())
    assert 2 <= killed_at < 12

    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    full = tmp_path / "full"
    assert main(["run", str(config), "--out", str(full), "--quiet"]) == 0
    same_metrics(rows(full), rows(part))
    assert load_checkpoint(part)["round"] == 12


def test_kill_9_at_a_random_round_with_the_default_config_then_resume(tmp_path):
    """No checkpoint_every: the first round's checkpoint (then one every few minutes) is there."""
    config = write_config(tmp_path / "default.toml", **DEFAULT_CADENCE)
    # at >= 2: round 2's line is written after round 1's checkpoint (a kill right after round 1's
    # line can land before that checkpoint exists; there is nothing to resume then)
    at = random.Random().randint(2, 8)
    part = tmp_path / "part"
    assert signal_after(start_run(config, part), part, at, signal.SIGKILL) == -signal.SIGKILL, at
    assert load_checkpoint(part)["round"] >= 1
    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    full = tmp_path / "full"
    assert main(["run", str(config), "--out", str(full), "--quiet"]) == 0
    same_metrics(rows(full), rows(part))


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_writes_a_checkpoint_and_says_how_to_resume(tmp_path, signum, code):
    config = write_config(tmp_path / "long.toml", rounds=40, **{"local.local_steps": 5, "engine.threads": 1})
    part = tmp_path / "part"
    proc = start_run(config, part)
    assert signal_after(proc, part, 3, signum) == code
    err = proc.stderr.read().decode().strip()
    assert len(err.splitlines()) == 1 and f"dfl run --resume {part}" in err and "Traceback" not in err, err
    done = len(rows(part))
    assert 3 <= done < 40 and f"after round {done} of 40" in err, err
    assert load_checkpoint(part)["round"] == done  # the round it stopped after, not round 1
    assert not (part / "summary.json").exists()
    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    assert [r["round"] for r in rows(part)] == list(range(1, 41))


def test_checkpoint_cadence(monkeypatch, tmp_path):
    """Default: after the first round, then once checkpoint_minutes have passed, and at the end;
    checkpoint_every = N: every N rounds (also rounds that are not evaluated)."""
    from dfl.config import Config

    now = [0.0]
    monkeypatch.setattr(write, "clock", lambda: now[0])
    saved = []
    monkeypatch.setattr(write.RunDir, "checkpoint",
                        lambda self, round_, state: (saved.append(round_), setattr(self, "saved_round", round_),
                                                     setattr(self, "saved_at", now[0])))

    def rounds_saved(cfg, minutes_per_round):
        saved.clear()
        writer = write.RunDir(tmp_path, cfg, resume=True)
        for t in range(1, cfg.rounds + 1):
            now[0] += 60 * minutes_per_round
            writer.after_round(t, dict)
        return list(saved)

    cfg = Config().replace(rounds=20, **{"metrics.checkpoint_minutes": 5.0})
    assert rounds_saved(cfg, 1.0) == [1, 6, 11, 16, 20]
    assert rounds_saved(cfg, 0.01) == [1, 20]
    assert rounds_saved(cfg.replace(**{"metrics.checkpoint_every": 3}), 1.0) == [3, 6, 9, 12, 15, 18, 20]


def interrupted_run(config, tmp_path, stop_after=2):
    """A 4-round run of `config` stopped (by an exception) after `stop_after` rounds, checkpointed each round."""
    from dfl.config import load_config

    return helpers.interrupted_run(load_config(config).replace(rounds=4), tmp_path / "part", stop_after)


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
    assert [r["round"] for r in got] == [1, 2, 3, 4]
    from dfl.config import load_config
    from dfl.simulation import Simulation
    # the stray line is replaced by round 3 of the run itself: equal to the uninterrupted run
    assert_same_history(Simulation(load_config(config).replace(rounds=4)).run(), got, tol=0)


def test_checkpoint_write_is_atomic(config, tmp_path, monkeypatch):
    out = interrupted_run(config, tmp_path)
    good = (out / CHECKPOINT).read_bytes()

    def half_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(write.torch, "save", half_save)

    with pytest.raises(OSError):
        write.RunDir(out, None, label="x", resume=True).checkpoint(3, {})
    assert (out / CHECKPOINT).read_bytes() == good
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    assert load_checkpoint(out)["round"] == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not-a-checkpoint", "wrong-shape"])
def test_corrupt_checkpoint_is_reported_not_loaded(config, tmp_path, capsys, damage):
    out = interrupted_run(config, tmp_path)
    ckpt = out / CHECKPOINT
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
    assert_user_error(["run", "--resume", str(out), "--quiet"], capsys, str(ckpt))
    assert (out / "metrics.jsonl").read_bytes() == before  # nothing rewritten


def test_resume_of_a_finished_run_changes_nothing(config, tmp_path):
    out = interrupted_run(config, tmp_path)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    first = rows(out)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    same_metrics(first, rows(out))
