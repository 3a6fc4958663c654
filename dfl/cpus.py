"""How many torch threads a run may use: the CPUs this process may run on, not the machine's.

torch's OpenMP pool defaults to the machine's physical cores, whatever the process is allowed:
in a container limited to 2 CPUs of a 64-core host, or beside other jobs, its threads wait on
cores they cannot have and a round runs 10-25x slower (measured on 2 shared cores). So
`dfl run` sets torch's threads to

    available_cpus() = min(len(os.sched_getaffinity(0)), floor(cgroup CPU quota))

unless ``engine.threads`` is set; `dfl sweep --jobs N` gives each job ``available_cpus() // N``
(at least 1), and a Ray actor takes ``engine.cpus_per_actor`` (dfl.engines.ray_engine).
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator, Optional

#: cgroup v2 and v1 files holding the CPU quota of this process's group.
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (os.cpu_count() where the OS has no masks)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cgroup_quota() -> Optional[float]:
    """The cgroup CPU limit in CPUs (quota / period), or None when there is none or it is unreadable."""
    try:
        quota, period = CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota, period = (int(p.read_text()) for p in CGROUP_V1)
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (at least 1)."""
    n = affinity_cpus()
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def auto_threads(configured: int = 0, share: int = 1) -> int:
    """torch threads of a run: ``engine.threads`` when set, else this process's CPUs divided
    among ``share`` jobs running side by side (at least 1)."""
    return configured if configured > 0 else max(1, available_cpus() // max(1, share))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run a block with torch's intra-op threads set to ``n``; the previous count comes back after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)
