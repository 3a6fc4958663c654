"""Decentralized algorithms on Flower: a gossip ServerApp that only relays models.

Flower's transport is a star (SuperNodes talk to the SuperLink only), so the graph is virtual:
the ServerApp forwards to every node the models of its graph neighbours and the weights of its
row of W; the node does the mixing. One round t (DFedAvg / DFedSAM / DFedSAM-MGS / DFedAvgM,
Sun et al. TPAMI 2022, Shi et al. ICML 2023):

    active nodes:   x_i <- K local steps from x_i               (message "train.gossip")
    Q times:        z_i <- W_ii z_i + sum_{j ~ i} W_ij z_j      (message "query.mix", z_i = x_i)

D-PSGD (Lian et al. 2017) gossips the pre-step models and adds the local update after mixing:
z_i = x_i^before, x_i <- (W^Q z)_i + (x_i^after - x_i^before). Inactive nodes (participation < 1,
chosen by dfl.rng.participation, as `dfl run`) skip training but still mix and relay. W_t comes
from topologies/ (time-varying graphs included). The server keeps the last model it relayed of
each node, which gives consensus distance and the mean model's test accuracy; each node reports
its own model's accuracy on its held-out split in the reply to the round's last mixing step.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

import topologies

from ..algorithms import ALGORITHMS, RoundContext
from ..algorithms.base import Gossip
from ..algorithms.dpsgd import DPSGD
from ..errors import ConfigError, DflError
from ..rng import participation
from ..simulation import Simulation
from . import records as R
from .output import Recorder

#: Gossip algorithms the relay supports: mix the trained models, or (D-PSGD) the pre-step ones.
MIXES = {Gossip.aggregate: False, DPSGD.aggregate: True}


def mix_before(name: str) -> bool:
    """True when `name` gossips pre-step models (D-PSGD); ConfigError if the relay can't run it."""
    agg = ALGORITHMS[name].aggregate
    if agg not in MIXES:
        raise ConfigError(f"algorithm.name: {name!r} aggregates in a way the Flower gossip relay does not "
                          "implement; use `dfl run`")
    return MIXES[agg]


def wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    """Node ids once n SuperNodes are connected (DflError after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while len(ids := list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise DflError(f"only {len(ids)} of {n} SuperNodes connected after {timeout:.0f} s; "
                           "start one SuperNode per client (data.num_clients)")
        time.sleep(0.5)
    return ids


def exchange(grid: Grid, messages: list[Message], timeout: float, what: str) -> list[Message]:
    """send_and_receive that fails loudly: a gossip round needs every node's reply."""
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    bad = [m for m in replies if m.has_error()]
    if bad or len(replies) < len(messages):
        reason = bad[0].error.reason if bad else f"{len(messages) - len(replies)} replies missing (timeout)"
        raise DflError(f"{what}: a node failed: {reason}")
    return replies


class Relay:
    """The gossip protocol's server side: node ids <-> client ids, and the round loop."""

    def __init__(self, grid: Grid, sim: Simulation, rec: Recorder, timeout: float):
        self.grid, self.sim, self.rec, self.timeout = grid, sim, rec, timeout
        self.n = sim.cfg.data.num_clients
        self.mix_before = mix_before(sim.cfg.algorithm.name)
        self._W: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}

    def _msg(self, node: int, kind: str, content: RecordDict) -> Message:
        return Message(content=content, dst_node_id=node, message_type=kind)

    def setup(self) -> None:
        """Send every node the initial model; learn which client each node is."""
        ids = wait_for_nodes(self.grid, self.n, self.timeout)
        init = R.to_record(self.sim.layout, self.sim.bank[0])
        replies = exchange(self.grid, [self._msg(i, "query.setup", RecordDict({R.ARRAYS: init})) for i in ids],
                           self.timeout, "setup")
        self.node = {int(m.content[R.METRICS]["client_id"]): m.metadata.src_node_id for m in replies}
        if sorted(self.node) != list(range(self.n)):
            raise DflError(f"SuperNodes report client ids {sorted(self.node)}; expected each of 0..{self.n - 1} "
                           "once (check every node's --node-config partition-id)")
        self.client = {v: k for k, v in self.node.items()}
        self.models = self.sim.bank.clone()

    def mixing(self, t: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(W_t, degrees, spectral gap) from topologies/, cached for static graphs."""
        cfg = self.sim.cfg
        key = t if topologies.is_time_varying(cfg.topology.name) else 0
        if key not in self._W:
            G = self.sim.graphs.graph(t)
            W = topologies.mixing_matrix(G, rule=cfg.topology.mixing)
            deg = np.array([d for _, d in sorted(G.degree())], dtype=np.float64)
            self._W = {key: (W, deg, topologies.spectral_gap(W))}
        return self._W[key]

    def train(self, t: int, active: np.ndarray) -> tuple[torch.Tensor, list[float]]:
        """Active nodes train; returns the vectors z to gossip and the training losses."""
        conf = ConfigRecord({"round": t, "mix-before": self.mix_before})
        msgs = [self._msg(self.node[i], "train.gossip", RecordDict({R.CONFIG: conf})) for i in np.flatnonzero(active)]
        z = self.models.clone()
        losses = []
        for m in exchange(self.grid, msgs, self.timeout, f"round {t + 1} training"):
            z[self.client[m.metadata.src_node_id]] = R.from_record(self.sim.layout, m.content[R.ARRAYS])
            losses.append(float(m.content[R.METRICS]["train_loss"]))
        return z, losses

    def gossip(self, t: int, z: torch.Tensor, W: np.ndarray, evaluate: bool) -> tuple[torch.Tensor, list[float]]:
        """Q relay steps; node i receives z_j of every j with W_ij > 0 and mixes them itself.

        With `evaluate`, the last step's replies carry each node's local accuracy (saves a round trip).
        """
        q_steps = self.sim.cfg.algorithm.gossip_steps
        for q in range(q_steps):
            recs = [R.to_record(self.sim.layout, z[j]) for j in range(self.n)]
            msgs = []
            for i in range(self.n):
                nbrs = [j for j in np.flatnonzero(W[i]) if j != i]
                content = RecordDict({f"nbr-{j}": recs[j] for j in nbrs})
                content[R.CONFIG] = ConfigRecord({
                    "round": t, "self-weight": float(W[i, i]), "neighbours": [int(j) for j in nbrs] or [-1],
                    "weights": [float(W[i, j]) for j in nbrs] or [0.0], "last": q == q_steps - 1,
                    "evaluate": evaluate})
                msgs.append(self._msg(self.node[i], "query.mix", content))
            z, accs = z.clone(), []
            for m in exchange(self.grid, msgs, self.timeout, f"round {t + 1} gossip step {q + 1}"):
                z[self.client[m.metadata.src_node_id]] = R.from_record(self.sim.layout, m.content[R.ARRAYS])
                accs.append(float(m.content[R.METRICS].get("local_acc", float("nan"))))
        return z, accs

    def run(self) -> None:
        sim, cfg = self.sim, self.sim.cfg
        self.setup()
        for t in range(cfg.rounds):
            active = participation(cfg.seed, t, self.n, cfg.algorithm.participation)
            W, deg, gap = self.mixing(t)
            z, losses = self.train(t, active)
            evaluate = self.rec.is_eval_round(t + 1)
            self.models, accs = self.gossip(t, z, W, evaluate)
            ctx = RoundContext(round=t, active=torch.as_tensor(active), W=None, degrees=deg,
                               gossip_steps=cfg.algorithm.gossip_steps, lr=sim.schedule(t),
                               local_steps=int(sim.steps.max()))
            sim.comm_mb += sim.algo.comm_mb(ctx, sim.model_bytes)
            if evaluate:
                self.rec.local(accs)
                q = cfg.algorithm.gossip_steps
                self.rec.write(t + 1, self.models, {
                    "train_loss": float(np.nanmean(losses)), "spectral_gap": gap,
                    "effective_gap": 1.0 - (1.0 - gap) ** q, "comm_mb": sim.comm_mb,
                    "active_clients": int(active.sum()), "lr": ctx.lr, "live_edges": int(deg.sum()) // 2})


def run_gossip(grid: Grid, sim: Simulation, rec: Recorder, timeout: float) -> None:
    Relay(grid, sim, rec, timeout).run()

