"""Row e of `dfl bench` on Flower (dfl.bench.flower): a tiny Flower simulation is timed, and every
process it started (the background local SuperLink of `flwr run . local`, its ServerApp and
simulation subprocesses, Ray) is gone afterwards."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("flwr")
from dfl.bench.end_to_end import E_CONFIG  # noqa: E402
from dfl.bench.flower import _numbers, flower_simulation_time, processes_of, stop_processes  # noqa: E402
from dfl.config import load_config  # noqa: E402
from dfl.simulation import Simulation  # noqa: E402


def test_stop_processes_ends_only_the_benchmarks_own(tmp_path):
    home = tmp_path / "flwr-home"
    env = {**os.environ, "FLWR_HOME": str(home)}
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while mine.pid not in processes_of(home):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert other.pid not in processes_of(home)
        assert stop_processes(home, grace=5) == 1
        assert mine.wait(timeout=5) != 0 and other.poll() is None and processes_of(home) == []
    finally:
        other.kill()
        other.wait()
        if mine.poll() is None:
            mine.kill()


def test_numbers_are_steady_state_per_round():
    rows = [{"round": 1, "wall_s": 10.0, "test_acc": 0.5}, {"round": 2, "wall_s": 12.0, "test_acc": 0.6},
            {"round": 4, "wall_s": 18.0, "test_acc": 0.7}]
    got = _numbers(rows, 30.0)
    assert got == {"end_to_end_s": 30.0, "first_round_s": 10.0, "per_round_s": pytest.approx(2.5),
                   "final_acc": 0.7, "rounds": 4}
    assert _numbers(rows[:1], 30.0)["per_round_s"] == 10.0


@pytest.mark.slow
def test_flower_simulation_time_tiny(tmp_path):
    text = E_CONFIG.format(rounds=2, clients=3, backend="vectorized")
    got = flower_simulation_time(text, tmp_path, timeout=300)
    assert "error" not in got, got
    assert got["rounds"] == 2 and 0 < got["per_round_s"] < got["end_to_end_s"]
    (tmp_path / "e.toml").write_text(text)
    want = Simulation(load_config(tmp_path / "e.toml")).run()[-1]["test_acc"]  # what `dfl run` gets
    assert got["final_acc"] == pytest.approx(want, abs=1e-6)
    assert processes_of(tmp_path / "flower-bench" / "flwr-home") == []
    print(f"tiny Flower simulation: {got}")
