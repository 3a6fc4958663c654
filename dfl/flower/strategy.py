"""Centralized algorithms (FedAvg, FedSAM, MoFedSAM) through Flower's own strategies.

Server side, FedAvg (McMahan et al., AISTATS 2017) is flwr.serverapp.strategy.FedAvg, or
FedAvgM with momentum 0 and server_learning_rate = algorithm.server_lr when that is not 1
(x <- x - eta (x - mean_i x_i) = x + eta (mean_i x_i - x), dfl's ServerAveraging). Clients are
weighted equally (metric "client-weight" = 1), as in `dfl run`. FedSAM is FedAvg whose clients
train with a SAM-family optimizer: nothing changes on the server.

MoFedSAM (Qu et al., ICML 2022) needs the server's last update on the clients: a small mixin over
the strategy asks dfl's MoFedSAM algorithm object for the round's Correction (alpha, (1-alpha) Delta,
Delta = -mean_i(x_i - x^{t-1}) / (K lr)) and attaches it to the train messages (ArrayRecord
"correction", config "correction-grad-scale"); the ClientApp applies it at every local step.

Metrics: the train-metrics hook of the strategy also measures the client drift (consensus
distance of the returned local models) and the evaluate hook the mean / std of local accuracy;
the strategy's evaluate_fn writes the row (global test accuracy of the aggregated model).

Lost nodes (dfl.flower.tolerant): the strategy runs on a TolerantGrid, so a node whose reply is
missing or an error is left out of the average (FedAvg over the replies that came) and is not
sampled again; before sampling, the strategy's minimum node counts are lowered to the nodes still
there (Flower's sampler would otherwise wait for the lost ones forever). Each row records
`active_clients` (train replies aggregated) and `lost_nodes` (cumulative).

Rejoining nodes: before each round's sampling the TolerantGrid admits nodes that connected
since (a restarted SuperNode takes its lost client's place); what such a node missed is the
global model, which every train message carries, so it simply is sampled again (with fresh
optimizer state). Rows record `rejoined_nodes` (cumulative).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedAvgM

from ..algorithms import RoundContext
from ..metrics import consensus_distance, local_accuracy, round_row
from ..simulation import Parts
from . import records as R
from .output import Recorder
from .federation import wait_for_nodes
from .tolerant import TolerantGrid


class AlgorithmHooks:
    """Mixin over a Flower strategy: sends dfl's per-round Correction (MoFedSAM) to the clients."""

    parts: Parts

    def _context(self, t: int) -> RoundContext:
        p = self.parts
        n = p.cfg.data.num_clients
        return RoundContext(round=t, active=torch.ones(n, dtype=torch.bool), W=None, degrees=np.zeros(n),
                            gossip_steps=1, lr=p.schedule(t), local_steps=int(p.steps.max()))

    def _fit_to(self, grid: Grid) -> None:
        """Lower the sampler's minimum node counts to the nodes still in the run."""
        there = len(list(grid.get_node_ids()))
        if isinstance(grid, TolerantGrid):
            grid.check(there)
        self.min_available_nodes = min(self.n_nodes, there)  # type: ignore[attr-defined]
        self.min_train_nodes = min(self.n_train, there)  # type: ignore[attr-defined]
        self.min_evaluate_nodes = min(self.n_nodes, there)  # type: ignore[attr-defined]

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        self._fit_to(grid)
        return super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if isinstance(grid, TolerantGrid):
            grid.round = server_round
            grid.admit(self.timeout, {"num-clients": self.n_nodes})  # type: ignore[attr-defined]
        self._fit_to(grid)
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        p = self.parts
        row = R.from_record(p.layout, arrays).to(p.device)
        prev = getattr(self, "_prev_row", None)
        if prev is not None:  # the mean client update of round t-1 (0-based), before the server lr
            p.algo.on_update((row - prev) / p.cfg.algorithm.server_lr, self._context(server_round - 2))
        self._prev_row = row
        correction = p.algo.correction(self._context(server_round - 1))
        if correction is not None:
            direction = R.to_record(p.layout, correction.direction)
            for m in messages:
                m.content[R.CORRECTION] = direction
                m.content[R.CONFIG]["correction-grad-scale"] = float(correction.grad_scale)
        return messages


class DflFedAvg(AlgorithmHooks, FedAvg):
    """Flower's FedAvg with dfl's hooks (MoFedSAM's correction, drift and local-accuracy metrics)."""


class DflFedAvgM(AlgorithmHooks, FedAvgM):
    """Flower's FedAvgM (server_learning_rate = algorithm.server_lr, no momentum) with dfl's hooks."""


def make_strategy(rec: Recorder) -> Any:
    """Flower's FedAvg (or FedAvgM when algorithm.server_lr != 1) with dfl's hooks mixed in."""
    cfg = rec.parts.cfg
    n = cfg.data.num_clients
    cls, extra = DflFedAvg, {}
    if cfg.algorithm.server_lr != 1.0:
        cls, extra = DflFedAvgM, {"server_learning_rate": cfg.algorithm.server_lr, "server_momentum": 0.0}
    strategy = cls(fraction_train=cfg.algorithm.participation, fraction_evaluate=1.0,
                   min_train_nodes=max(1, int(round(cfg.algorithm.participation * n))),
                   min_evaluate_nodes=n, min_available_nodes=n, weighted_by_key=R.WEIGHT,
                   arrayrecord_key=R.ARRAYS, configrecord_key=R.CONFIG,
                   train_metrics_aggr_fn=lambda c, k: _train_metrics(rec, c),
                   evaluate_metrics_aggr_fn=lambda c, k: _evaluate_metrics(rec, c), **extra)
    strategy.parts, strategy.n_nodes, strategy.n_train = rec.parts, n, max(1, int(round(cfg.algorithm.participation * n)))
    return strategy


def _train_metrics(rec: Recorder, contents: list[RecordDict]) -> MetricRecord:
    """Mean train loss of the round's clients, and their drift before aggregation."""
    losses = [float(c[R.METRICS]["train_loss"]) for c in contents]
    rows = torch.stack([R.from_record(rec.parts.layout, c[R.ARRAYS]) for c in contents])
    out = {"train_loss": float(np.nanmean(losses)), "drift": consensus_distance(rows),
           "active_clients": len(contents)}
    rec.round_extra.update(out)
    return MetricRecord(out)


def _evaluate_metrics(rec: Recorder, contents: list[RecordDict]) -> MetricRecord:
    accs = [float(c[R.METRICS]["local_acc"]) for c in contents]
    rec.local(accs)
    return MetricRecord(local_accuracy(accs))


def run_centralized(grid: TolerantGrid, rec: Recorder, timeout: float) -> None:
    """Run cfg.rounds rounds of the strategy; the evaluate_fn writes every evaluated round."""
    p = rec.parts
    n = p.cfg.data.num_clients
    strategy = make_strategy(rec)
    strategy.timeout = timeout
    grid.start(wait_for_nodes(grid, n, timeout, grid.min_nodes))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> Optional[MetricRecord]:
        if server_round == 0:
            return None
        train = rec.round_extra
        active = int(train.get("active_clients", 0))
        ctx = strategy._context(server_round - 1)
        ctx.active = torch.arange(n) < active
        rec.comm_mb += p.algo.comm_mb(ctx, p.model_bytes)
        if not rec.is_eval_round(server_round):
            rec.round_extra = {}
            return None
        row = R.from_record(p.layout, arrays)
        training = round_row(train_loss=train.get("train_loss", float("nan")), gap=1.0, gossip_steps=1,
                             comm_mb=rec.comm_mb, active_clients=active, lr=ctx.lr,
                             **({"drift": train["drift"]} if "drift" in train else {}),
                             lost_nodes=len(grid.losses), rejoined_nodes=len(grid.rejoins))
        out = rec.write(server_round, row.expand(n, -1), training)
        return MetricRecord({k: float(v) for k, v in out.items() if isinstance(v, (int, float))})

    config = ConfigRecord({"num-clients": n})  # every node builds its Config with it
    strategy.start(grid, R.to_record(p.layout, p.initial_row()), num_rounds=p.cfg.rounds, timeout=timeout,
                   train_config=config, evaluate_config=ConfigRecord(dict(config)), evaluate_fn=evaluate_fn)
