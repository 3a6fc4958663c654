"""The ServerApp: one dfl experiment on a Flower Grid (simulation or real SuperNodes).

Reads the dfl Config from the run config (dfl.flower.settings), builds the run's parts
(dfl.simulation.build: model and its initialisation, parameter layout, graphs and W_t, schedule,
algorithm hooks, global test set; the server never trains), then runs

    centralized algorithms (fedavg, fedsam, mofedsam)   Flower's FedAvg / FedAvgM strategy
    decentralized algorithms (dfedavg, dfedsam, ...)    the gossip relay (dfl.flower.gossip)

and writes the run directory of `dfl run` (config.toml, metrics.jsonl, summary.json,
manifest.json) to the run config's "out". In Flower's Simulation Runtime the federation's size
is fixed at start: data.num_clients is fitted to it or the run stops at once with the fix
(dfl.flower.federation); a deployment waits for its SuperNodes, saying how many are there.
"""
from __future__ import annotations

import logging

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ..errors import USER_ERRORS
from ..simulation import build
from .gossip import run_gossip
from .output import Recorder, open_run
from .federation import fit_config
from .strategy import run_centralized
from .tolerant import TolerantGrid, min_nodes

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment named by context.run_config and write its run directory.

    A user error (bad config, wrong federation size, too few nodes left) is logged as one line
    "dfl: error: ..." before it propagates (Flower then marks the run failed and logs its traceback).
    """
    try:
        run(grid, context)
    except USER_ERRORS as exc:
        log(logging.ERROR, "dfl: error: %s", exc)
        raise


def run(grid: Grid, context: Context) -> None:
    """The experiment of `main`: fit the config to the federation, run it, write the run directory."""
    cfg, simulated = fit_config(context.run_config, grid)
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    parts = build(cfg)
    tolerant = TolerantGrid(grid, min_nodes(context.run_config, cfg.data.num_clients),
                            num_clients=cfg.data.num_clients)
    rec = Recorder(parts, open_run(cfg, dict(context.run_config)))
    timeout = float(context.run_config.get("timeout", 600))
    if parts.algo.centralized:
        run_centralized(tolerant, rec, timeout)
        kind = "FedAvgM" if cfg.algorithm.server_lr != 1.0 else "FedAvg"
    else:
        run_gossip(tolerant, rec, timeout)
        kind = "gossip relay"
    rec.finish({"flower_server": kind, "nodes": cfg.data.num_clients, "num_clients": cfg.data.num_clients,
                "flower_runtime": "simulation" if simulated else "deployment",
                "min_nodes": tolerant.min_nodes, "lost_nodes": tolerant.summary(),
                "rejoined_nodes": tolerant.rejoin_summary()})
