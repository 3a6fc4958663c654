"""`dfl sweep --resume DIR`: finished runs untouched, interrupted ones resumed from their
checkpoints, missing ones started; a run that fails does not stop the others."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfl.cli import main
from dfl.config import load_config
from dfl.rundir.checkpoint import load_checkpoint
from tests.helpers import assert_same_history, assert_user_error, interrupted_run, read_metrics, write_config

ROOT = Path(__file__).resolve().parent.parent
SWEEP = {"rounds": 5, "local.local_steps": 2, "engine.threads": 1}
COMPARE = ("round", "test_acc", "test_loss", "consensus", "train_loss", "local_test_acc", "comm_mb")


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "sweep.toml", {"local.lr": [0.05, 0.1, 0.2]}, **SWEEP)


def same(a, b):
    assert_same_history(a, b, tol=1e-6, keys=COMPARE)


def snapshot(path):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(path).iterdir())}


def interrupt(run_dir, stop_after=3):
    """Replace a run directory by one whose run stopped after `stop_after` rounds (as if killed):
    its checkpoint is the first round's (the default cadence), metrics.jsonl has more rows."""
    cfg = load_config(run_dir / "config.toml")
    shutil.rmtree(run_dir)
    interrupted_run(cfg, run_dir, stop_after, before_checkpoint=True)
    assert load_checkpoint(run_dir)["round"] == 1 and len(read_metrics(run_dir)) == stop_after


def test_resume_finishes_a_sweep(config, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(["sweep", str(config), "--out", str(ref), "--quiet"]) == 0
    names = [r["dir"] for r in json.loads((ref / "sweep.json").read_text())["runs"]]
    assert len(names) == 3

    out = tmp_path / "sweep"
    shutil.copytree(ref, out)
    finished, interrupted, missing = (out / n for n in names)
    interrupt(interrupted)
    shutil.rmtree(missing)
    before = snapshot(finished)
    config.unlink()  # the sweep is rebuilt from sweep.json, not from the source file
    capsys.readouterr()

    assert main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert snapshot(finished) == before
    for n in names:
        same(read_metrics(ref / n), read_metrics(out / n))
        assert load_checkpoint(out / n)["round"] == 5
    assert "sweep of 3 runs" in capsys.readouterr().out
    # a finished sweep: nothing to do, nothing touched
    again = {n: snapshot(out / n) for n in names}
    assert main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert {n: snapshot(out / n) for n in names} == again


def test_a_failing_run_does_not_stop_the_others(tmp_path, capsys):
    p = write_config(tmp_path / "c.toml", {"local.lr": [0.1, 1000000.0, 0.05]},
                     rounds=2, **{"engine.threads": 1, "local.schedule": "constant"})
    out = tmp_path / "sweep"
    assert_user_error(["sweep", str(p), "--out", str(out), "--quiet"], capsys, "1 of 3 runs failed",
                      "001-lr=1000000.0", "not finite", f"dfl sweep --resume {out}")
    ok = sorted(d.name for d in out.iterdir() if (d / "summary.json").is_file())
    assert ok == ["000-lr=0.1", "002-lr=0.05"]
    assert "not finite" in (out / "001-lr=1000000.0" / "error.txt").read_text()
    # resume retries only the failed one (still failing): the others stay as they are
    kept = snapshot(out / "000-lr=0.1")
    assert_user_error(["sweep", "--resume", str(out), "--quiet"], capsys, "1 of 3 runs failed")
    assert snapshot(out / "000-lr=0.1") == kept


@pytest.mark.parametrize("argv,needle", [
    (["sweep", "--resume", "{tmp}/none"], "no sweep.json there"),
    (["sweep", "CONFIG", "--resume", "{tmp}"], "CONFIG, --set and --overwrite are not allowed"),
    (["sweep"], "give a CONFIG file"),
])
def test_bad_resume_command_lines(config, tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("CONFIG", str(config)) for a in argv]
    assert_user_error(argv, capsys, needle)


@pytest.mark.slow  # three spawned job processes (torch imports) on 2 cores: ~30 s
def test_jobs_in_processes_stop_on_sigterm_and_resume(config, tmp_path):
    """--jobs 2: SIGTERM to the sweep reaches every job (checkpoint, exit), the sweep exits 143
    with one line; --resume --jobs 2 finishes it; each job ran with its share of the CPUs."""
    long = tmp_path / "long.toml"
    # long enough that the SIGTERM lands while the first two runs are running (a run left alone
    # after the others finished rightly takes all the CPUs, which the threads check below excludes)
    long.write_text(config.read_text().replace("rounds = 5", "rounds = 400").replace("threads = 1", "threads = 0"))
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dfl", "sweep", str(long), "--out", str(out), "--quiet",
                             "--jobs", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            m = list(out.glob("*/metrics.jsonl"))
            if len(m) == 2 and all(len(f.read_bytes().splitlines()) >= 2 for f in m):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode().strip()
    assert len(err.splitlines()) == 1 and f"dfl sweep --resume {out}" in err, err
    started = [d for d in sorted(out.iterdir()) if d.is_dir()]
    assert len(started) == 2 and all(load_checkpoint(d)["round"] == len(read_metrics(d)) for d in started)
    assert main(["sweep", "--resume", str(out), "--quiet", "--jobs", "2"]) == 0
    from dfl import cpus
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        assert [r["round"] for r in read_metrics(d)] == list(range(1, 401))
        # every run was resumed or started beside another one: each had half the CPUs
        assert json.loads((d / "manifest.json").read_text())["torch_threads"] == cpus.auto_threads(0, share=2)
