"""The Ray session and the actors of engine.backend = "ray": connect, place, reuse, release.

- ``connect``: join engine.ray_address (or $RAY_ADDRESS, as ``ray job submit`` sets it), or
  start a quiet local Ray (no dashboard, no worker logs on the driver) that stops with the last
  run that uses it. A Ray the caller already initialized (a test fixture, a notebook) is used as
  is and left running.
- ``placement``: how many actors, with how many CPUs / GPUs each.
- ``acquire`` / ``release``: actor processes take seconds to start (torch import), so a finished
  run's actors go back to an idle pool of the session and the next run in the same process (a
  list-valued config, a test) sets them up again instead of starting new ones.
"""
from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import ray

from ..config import EngineConfig
from ..errors import ConfigError, DflError
from . import ray_actor

#: Restarts allowed per actor (Ray's max_restarts).
MAX_RESTARTS = 3

_session: dict[str, Any] = {"owned": False, "users": 0}
_pool: dict[str, Any] = {"job": None, "idle": []}  # idle: [(cpus, gpus, actor)]


def _code_path() -> str:
    """The folder holding dfl/ and topologies/ (what the actors import)."""
    return str(Path(__file__).resolve().parents[2])


@contextmanager
def _pythonpath() -> Iterator[dict[str, str]]:
    """PYTHONPATH with dfl's folder, set while a local Ray starts (its workers inherit it)."""
    old = os.environ.get("PYTHONPATH")
    new = os.pathsep.join(p for p in (_code_path(), old) if p)
    os.environ["PYTHONPATH"] = new
    try:
        yield {"PYTHONPATH": new}
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def connect(engine: EngineConfig) -> bool:
    """Make sure Ray is up; True when this call holds a use of a session dfl started (``disconnect``)."""
    if ray.is_initialized():
        if _session["owned"]:
            _session["users"] += 1
        return bool(_session["owned"])
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    address = engine.ray_address or os.environ.get("RAY_ADDRESS", "")  # `ray job submit` sets it
    with _pythonpath() as env:
        try:
            if address:  # the cluster's workers get dfl's folder too (same path, or dfl installed)
                ray.init(address=address, runtime_env={"env_vars": env}, **quiet)
            else:
                ray.init(address="local", num_cpus=engine.ray_num_cpus or None, **quiet)
        except ConnectionError as exc:
            raise DflError(f"engine.ray_address: cannot join the Ray cluster at {address!r} "
                           f"({exc}); start it with `ray start --head`, set RAY_AUTH_MODE=token if the "
                           "cluster uses token authentication, or leave ray_address empty for a local Ray"
                           ) from None
    _session.update(owned=True, users=1)
    return True


def disconnect() -> None:
    """Release one use of the session dfl started; the last one shuts Ray down (a joined cluster
    keeps running: the driver only disconnects)."""
    if _session["owned"]:
        _session["users"] -= 1
        if _session["users"] <= 0:
            _session.update(owned=False, users=0)
            _pool.update(job=None, idle=[])
            ray.shutdown()


def placement(n: int, engine: EngineConfig, free: dict[str, float]) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for n clients given the cluster's `free` resources.

    k = ceil(n / clients_per_actor) if set; else one actor per GPU share (gpus_per_actor, 1 when
    the cluster has GPUs and engine.device is not "cpu"), else one per cpus_per_actor CPUs.
    """
    cpus_free, gpus_free = float(free.get("CPU", 0.0)), float(free.get("GPU", 0.0))
    gpus = engine.gpus_per_actor or (1.0 if gpus_free >= 1 and engine.device != "cpu" else 0.0)
    cpus = engine.cpus_per_actor
    if engine.clients_per_actor:
        k = math.ceil(n / engine.clients_per_actor)
    elif gpus:
        k = int(gpus_free / gpus + 1e-9)
    else:
        k = int(cpus_free / cpus + 1e-9)
    k = max(1, min(n, k))
    if k * cpus > cpus_free + 1e-9 or k * gpus > gpus_free + 1e-9:
        raise ConfigError(
            f"engine: {k} Ray actors with {cpus:g} CPU and {gpus:g} GPU each do not fit the cluster "
            f"({cpus_free:g} CPUs, {gpus_free:g} GPUs free); raise engine.clients_per_actor or lower "
            "engine.cpus_per_actor / engine.gpus_per_actor")
    return k, cpus, gpus


def free_resources() -> dict[str, float]:
    """Ray's available resources plus what this session's idle actors hold."""
    _check_pool()
    free = dict(ray.available_resources())
    for cpus, gpus, _ in _pool["idle"]:
        free["CPU"] = free.get("CPU", 0.0) + cpus
        free["GPU"] = free.get("GPU", 0.0) + gpus
    return free


def _check_pool() -> None:
    # a new Ray session: old handles are void. The job id alone repeats when a process shuts
    # Ray down and starts a new one (ray.shutdown(); ray.init()): the driver's node tells them apart
    ctx = ray.get_runtime_context()
    job = (ctx.get_job_id(), ctx.get_node_id())
    if _pool["job"] != job:
        _pool.update(job=job, idle=[])


def acquire(k: int, cpus: float, gpus: float) -> list[Any]:
    """k actors with these resources: idle ones of the session first, then new ones.

    Idle actors of another shape are killed, so that their resources are free for the new ones.
    """
    _check_pool()
    same = [e for e in _pool["idle"] if e[0] == cpus and e[1] == gpus]
    reused, keep = same[:k], same[k:]
    for _, _, actor in (e for e in _pool["idle"] if e not in same):
        ray.kill(actor, no_restart=True)
    _pool["idle"] = keep
    cls = ray.remote(ray_actor.ClientBlock).options(
        num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
        scheduling_strategy="SPREAD")
    return [e[2] for e in reused] + [cls.remote() for _ in range(k - len(reused))]


def release(actors: list[Any], cpus: float, gpus: float, owned: bool, restarted: Iterable[int] = ()) -> None:
    """A run is done with its actors: back to the idle pool, or gone with the session it held.

    An actor that died during the run (indices ``restarted``) is killed instead: Ray's restarts
    of an actor are counted over its lifetime, so a reused one would have fewer left."""
    if not ray.is_initialized():
        return
    last = owned and _session["users"] <= 1
    restarted = set(restarted)
    for i, actor in enumerate(actors):
        if last or i in restarted:
            ray.kill(actor, no_restart=True)
        else:
            actor.clear.remote()
            _pool["idle"].append((cpus, gpus, actor))
    if owned:
        disconnect()
