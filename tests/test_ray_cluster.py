"""engine.backend = "ray" across processes: joining a running cluster, and Ctrl-C.

Each test runs `dfl run` in a subprocess (its own Ray driver), so they do not touch the Ray of
tests/test_ray.py. The cluster is started with `ray start --head --block` in its own process
group and stopped by signalling that group: `ray stop` would stop every Ray on the machine.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import assert_same_history, free_port, read_metrics

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).parent / "ray"
QUICKSTART = ROOT / "experiments" / "quickstart.toml"
SMALL = ["--set", "seed=0", "--set", "rounds=2", "--set", "algorithm.name=dfedavg", "--set", "data.num_clients=6",
         "--set", "model.name=mlp", "--set", "local.local_steps=5", "--set", "local.lr=0.3", "--quiet"]

pytestmark = pytest.mark.slow


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token", **extra}


def dfl(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dfl", "run", str(QUICKSTART), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, **kw)


@pytest.fixture
def cluster():
    port, temp = free_port(), tempfile.mkdtemp(prefix="rc", dir="/tmp")
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(RAY), "status", f"--address=127.0.0.1:{port}"], env=env(),
                             capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "ray start failed"
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_joins_an_existing_cluster_and_leaves_it_running(cluster, tmp_path):
    run = dfl(*SMALL, "--set", "engine.backend=ray", "--set", f"engine.ray_address={cluster}",
              "--out", str(tmp_path / "ray"), env=env())
    assert run.returncode == 0, run.stderr[-2000:]
    ref = dfl(*SMALL, "--out", str(tmp_path / "vec"), env=env())
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert_same_history(read_metrics(tmp_path / "vec"), read_metrics(tmp_path / "ray"), tol=1e-6)
    status = subprocess.run([str(RAY), "status", f"--address={cluster}"], env=env(), capture_output=True)
    assert status.returncode == 0  # the driver only disconnected


def default_sigint() -> None:
    """In the child: Ctrl-C's default action. A background job of a non-interactive shell (CI run
    with `&`) ignores SIGINT, and a child inherits that, so the signal would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_local_ray(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dfl", "run", str(QUICKSTART), *SMALL, "--set", "rounds=1000",
                             "--set", "engine.backend=ray", "--out", str(out)],
                            cwd=ROOT, env=env(), start_new_session=True, preexec_fn=default_sigint,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 20  # raylet, GCS and the actors go with the driver
        while subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout.strip():
            assert time.monotonic() < deadline, "Ray processes left behind"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
