"""torch threads from the CPUs this process may use (affinity mask, cgroup quota), not the machine's."""
import json

import pytest
import torch

from dfl import cpus
from dfl.cli import main
from tests.helpers import write_config


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """Mock the affinity mask and the cgroup v2 quota file; returns a setter."""
    def set_(mask, quota=None):
        monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(mask), raising=False)
        f = tmp_path / "cpu.max"
        f.write_text("max 100000\n" if quota is None else f"{int(quota * 100000)} 100000\n")
        monkeypatch.setattr(cpus, "CGROUP_V2", f)
    return set_


@pytest.mark.parametrize("mask,quota,want", [
    ({0, 1, 2, 3, 4, 5, 6, 7}, None, 8),
    ({3, 5, 9}, None, 3),          # taskset / a scheduler's cpuset: the mask, not os.cpu_count()
    (set(range(64)), 2.0, 2),      # docker --cpus=2 on a 64-core host
    (set(range(64)), 1.5, 1),      # a fractional quota rounds down
    (set(range(64)), 0.5, 1),      # never below one
    ({0, 1}, 8.0, 2),
])
def test_available_cpus(machine, mask, quota, want):
    machine(mask, quota)
    assert cpus.available_cpus() == want


def test_cgroup_v1_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(cpus, "CGROUP_V2", tmp_path / "absent")
    q, p = tmp_path / "quota", tmp_path / "period"
    q.write_text("300000\n")
    p.write_text("100000\n")
    monkeypatch.setattr(cpus, "CGROUP_V1", (q, p))
    assert cpus.cgroup_quota() == 3.0
    q.write_text("-1\n")
    assert cpus.cgroup_quota() is None


def test_auto_threads_shares_and_configured(machine):
    machine(set(range(8)))
    assert cpus.auto_threads() == 8
    assert cpus.auto_threads(0, share=3) == 2     # dfl sweep --jobs 3
    assert cpus.auto_threads(0, share=16) == 1
    assert cpus.auto_threads(5, share=3) == 5     # engine.threads wins


def write(tmp_path, **changes):
    return write_config(tmp_path / "c.toml", rounds=1, **{"local.local_steps": 1, **changes})


@pytest.mark.parametrize("changes,want", [({}, 3), ({"engine.threads": 1}, 1)], ids=["auto", "configured"])
def test_dfl_run_takes_its_threads_from_the_affinity_mask(machine, tmp_path, changes, want):
    machine({2, 5, 7})
    before = torch.get_num_threads()
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, **changes)), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["torch_threads"] == want
    assert torch.get_num_threads() == before  # the caller's setting comes back


def test_a_sweep_job_gets_its_share(machine, tmp_path, monkeypatch):
    """run_one with share=N (what each of --jobs N processes calls) uses CPUs // N threads."""
    from dfl.commands.run import run_one
    from dfl.config import load_config
    from dfl.rundir.write import prepare

    machine(set(range(4)))
    out = prepare(tmp_path / "run")
    run_one(load_config(write(tmp_path)), out, quiet=True, share=2)
    assert json.loads((out / "manifest.json").read_text())["torch_threads"] == 2
