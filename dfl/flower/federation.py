"""How many SuperNodes a run has, on Flower's two runtimes.

Simulation Runtime (`flwr run .` on a simulation SuperLink, Flower's default "local" connection):
the ServerApp gets an InMemoryGrid whose virtual SuperNodes are all registered when the run
starts (`num-supernodes` of the federation: 2 unless changed), so nothing is waited for:

    nodes == data.num_clients                   the run goes on
    nodes != data.num_clients, and the run      data.num_clients := nodes, said in the log
      config leaves the count open (the app's   (dfl.flower.settings.leaves_num_clients_open)
      default config, no data.num_clients in `set`)
    otherwise                                   DflError in one line naming the fix:
                                                --federation-config "num-supernodes=<n>"

Deployment Runtime (flower-superlink + one flower-supernode per device): SuperNodes connect
when they start, so ``wait_for_nodes`` waits up to `timeout` seconds and logs its progress
(visible with `flwr run --stream`).

The ServerApp sends the client count it settled on to the nodes in every message (config key
"num-clients"), so both sides build the same Config.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from flwr.common.logger import log

from ..config import Config
from ..errors import DflError
from .settings import leaves_num_clients_open, run_config

#: Seconds between two progress lines while waiting for SuperNodes.
PROGRESS_EVERY = 5.0


def in_simulation(grid: Any) -> bool:
    """True when `grid` is the Simulation Runtime's (its node count is fixed at start).

    A grid may say so itself with an attribute ``simulation`` (the tests' in-memory grids).
    """
    flag = getattr(grid, "simulation", None)
    if isinstance(flag, bool):
        return flag
    try:
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError:  # another flwr layout: treat as a deployment (waits, with progress)
        return False
    return isinstance(grid, InMemoryGrid)


def simulated_nodes(grid: Any, settle: float = 0.5, limit: float = 30.0) -> list[int]:
    """The simulation's node ids. They are registered right after the ServerApp thread starts;
    read them once they are there and their count has not changed for `settle` seconds."""
    deadline = time.monotonic() + limit
    ids = list(grid.get_node_ids())
    while time.monotonic() < deadline:
        time.sleep(settle if ids else 0.1)
        again = list(grid.get_node_ids())
        if again and len(again) == len(ids):
            return again
        ids = again
    return ids


def fit_config(raw: Mapping[str, Any], grid: Any) -> tuple[Config, bool]:
    """(the run's Config, whether it runs in the Simulation Runtime).

    In a simulation, data.num_clients must be the federation's node count: it is adapted when
    the run config leaves it open, else DflError names the fix. A deployment keeps the config's.
    """
    cfg = run_config(raw)
    if not in_simulation(grid):
        return cfg, False
    nodes = len(simulated_nodes(grid))
    n = cfg.data.num_clients
    if nodes == n:
        return cfg, True
    if nodes and leaves_num_clients_open(raw):
        fitted = run_config(raw, num_clients=nodes)
        log(logging.WARNING, "dfl: the simulation federation has %s SuperNodes: running %s with "
            "data.num_clients=%s (it says %s). For %s clients: flwr run . --federation-config "
            "\"num-supernodes=%s\"", nodes, raw.get("config"), nodes, n, n, n)
        return fitted, True
    raise DflError(f"the simulation federation has {nodes} SuperNodes but data.num_clients={n} (one "
                   f"SuperNode per client): run flwr run . --federation-config \"num-supernodes={n}\" "
                   f"(or set it once: flwr federation simulation-config --num-supernodes {n})")


def wait_for_nodes(grid: Any, n: int, timeout: float, at_least: int | None = None) -> list[int]:
    """Node ids once n SuperNodes are connected; after `timeout` seconds, those connected if
    there are `at_least` of them (default n), else DflError. Logs the count every few seconds."""
    start = time.monotonic()
    deadline, said, said_at = start + timeout, -1, 0.0
    while len(ids := list(grid.get_node_ids())) < n:
        now = time.monotonic()
        if now > deadline:
            if len(ids) >= (n if at_least is None else at_least):
                return ids
            raise DflError(f"only {len(ids)} of {n} SuperNodes connected after {timeout:.0f} s; "
                           "start one SuperNode per client (data.num_clients)")
        if len(ids) != said or now - said_at >= PROGRESS_EVERY:
            log(logging.INFO, "dfl: %s of %s SuperNodes connected; waiting up to %.0f s",
                len(ids), n, deadline - now)
            said, said_at = len(ids), now
        time.sleep(0.5)
    return ids
