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

Lost nodes (dfl.flower.tolerant: no reply within the timeout, or an error reply) leave the
graph: from the next exchange on, W_t is topology.mixing on G_t without their edges (as
dfl.faults does for failed links), so every survivor's row mixes survivors only; the metrics
(test accuracy of the mean model, consensus) are over the survivors, and each row records
`lost_nodes` (cumulative) and `active_clients` (nodes whose training reply arrived).

Rejoining nodes: at the start of every round the TolerantGrid admits nodes that connected since
(a restarted SuperNode, usually under a new node id; its partition-id says which client it is).
A node that takes a lost client's place starts from the mean of its live graph neighbours'
models (of all live models if it has none), with fresh optimizer state ("query.setup"); from
then on its row of W is rebuilt on the graph with it, and it trains, mixes and is measured like
the others. Rows record `rejoined_nodes` (cumulative).
"""
from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from ..algorithms import ALGORITHMS, RoundContext
from ..errors import ConfigError, DflError
from ..gossip import RoundGraph
from ..metrics import round_row
from ..rng import participation
from . import records as R
from .output import Recorder
from .federation import wait_for_nodes
from .tolerant import TolerantGrid


def mix_before(name: str) -> bool:
    """True when `name` gossips the start-of-round models (D-PSGD), False when the trained ones,
    as the algorithm declares (Algorithm.mixes); ConfigError if it does not gossip."""
    mixes = ALGORITHMS[name].mixes
    if mixes is None:
        raise ConfigError(f"algorithm.name: {name!r} aggregates in a way the Flower gossip relay does not "
                          "implement; use `dfl run`")
    return mixes == "before"


class Relay:
    """The gossip protocol's server side: node ids <-> client ids, and the round loop."""

    def __init__(self, grid: TolerantGrid, rec: Recorder, timeout: float):
        self.grid, self.rec, self.timeout = grid, rec, timeout
        self.parts = rec.parts
        self.n = self.parts.cfg.data.num_clients
        self.mix_before = mix_before(self.parts.cfg.algorithm.name)
        self.relayed = 0  # bytes relayed to the nodes in the current round's gossip (comm_mb)

    def _msg(self, node: int, kind: str, content: RecordDict) -> Message:
        if R.CONFIG in content.config_records:  # every node builds its Config with this client count
            content[R.CONFIG]["num-clients"] = self.n
        return Message(content=content, dst_node_id=node, message_type=kind)

    def _setup_content(self, row: torch.Tensor) -> RecordDict:
        return RecordDict({R.ARRAYS: R.to_record(self.parts.layout, row), R.CONFIG: ConfigRecord({})})

    def setup(self) -> None:
        """Send every node the initial model; learn which client each node is.

        Clients whose node is not connected after the timeout, or does not answer, are lost from
        the start (the run goes on if min-nodes remain).
        """
        ids = wait_for_nodes(self.grid, self.n, self.timeout, self.grid.min_nodes)
        self.grid.start(ids)
        start = self.parts.initial_bank()
        replies = self.grid.send_and_receive([self._msg(i, "query.setup", self._setup_content(start[0]))
                                              for i in ids], timeout=self.timeout)
        self.node = {int(m.content[R.METRICS]["client_id"]): m.metadata.src_node_id for m in replies}
        if len(self.node) < len(replies) or not set(self.node) <= set(range(self.n)):
            got = sorted(int(m.content[R.METRICS]["client_id"]) for m in replies)
            raise DflError(f"SuperNodes report client ids {got}; expected each of 0..{self.n - 1} "
                           "once (check every node's --node-config partition-id)")
        self._account_missing(sorted(set(range(self.n)) - set(self.node)))
        self.client = {v: k for k, v in self.node.items()}
        self.models = start

    def _account_missing(self, missing: list[int]) -> None:
        """Record clients without a node after setup: nodes that failed the setup (their client id
        is known only when a single one is missing) or that never connected (node id -1 - client)."""
        failed = [node for node, loss in self.grid.lost.items() if loss.client < 0]
        if len(missing) == 1 and len(failed) == 1:
            self.grid.mark_lost(failed[0], self.grid.lost[failed[0]].reason, client=missing[0])
        for c in missing[len(failed):]:
            self.grid.mark_lost(-1 - c, "no SuperNode of this client was connected", client=c)

    def rejoin(self, t: int) -> list[int]:
        """Nodes admitted by the grid take their client's place in round t: each gets the mean of
        its live neighbours' models on G_t (of all live models if none is live) and fresh
        optimizer state; W is rebuilt with it from this round on. Returns their clients."""
        joins = self.grid.admit(self.timeout, {"num-clients": self.n})
        if not joins:
            return []
        live, G = self.alive, self.parts.graphs.graph(t)
        live[[r.client for r in joins]] = False  # a joiner's own (stale) model is no one's source
        msgs = []
        for r in joins:
            self.node[r.client], self.client[r.node] = r.node, r.client
            nbrs = [j for j in G.neighbors(r.client) if live[j]] or [int(j) for j in np.flatnonzero(live)]
            if nbrs:
                self.models[r.client] = self.models[nbrs].mean(0)
            msgs.append(self._msg(r.node, "query.setup", self._setup_content(self.models[r.client])))
        self.grid.send_and_receive(msgs, timeout=self.timeout)
        return [r.client for r in joins]

    @property
    def alive(self) -> np.ndarray:
        """(n,) bool: clients whose node is still in the run."""
        return np.array([c in self.node and self.node[c] not in self.grid.lost for c in range(self.n)])

    def mixing(self, t: int) -> RoundGraph:
        """W_t on G_t minus the lost nodes' edges (the run's one W cache); the gap is that of the
        survivors' block of W."""
        return self.parts.mixing(t, frozenset(int(c) for c in np.flatnonzero(~self.alive)))

    def train(self, t: int, active: np.ndarray) -> tuple[torch.Tensor, list[float]]:
        """Active nodes train; returns the vectors z to gossip and the training losses."""
        conf = ConfigRecord({"round": t, "mix-before": self.mix_before})
        msgs = [self._msg(self.node[i], "train.gossip", RecordDict({R.CONFIG: conf}))
                for i in np.flatnonzero(active & self.alive)]
        z = self.models.clone()
        losses = []
        for m in self.grid.send_and_receive(msgs, timeout=self.timeout):
            z[self.client[m.metadata.src_node_id]] = R.from_record(self.parts.layout, m.content[R.ARRAYS])
            losses.append(float(m.content[R.METRICS]["train_loss"]))
        return z, losses

    def gossip(self, t: int, z: torch.Tensor, evaluate: bool) -> tuple[torch.Tensor, list[float]]:
        """Q relay steps; node i receives z_j of every j with W_ij > 0 and mixes them itself.

        W is looked up before every step: a node lost in step q is out of the graph from step q+1.
        With `evaluate`, the last step's replies carry each node's local accuracy (saves a round trip).
        self.relayed: the bytes of the models relayed to the nodes this round (what comm_mb counts).
        """
        q_steps = self.parts.cfg.algorithm.gossip_steps
        self.relayed = 0
        for q in range(q_steps):
            W = self.mixing(t).W
            recs = [R.to_record(self.parts.layout, z[j]) for j in range(self.n)]
            msgs = []
            for i in np.flatnonzero(self.alive):
                nbrs = neighbours(W, i)
                content = RecordDict({f"nbr-{j}": recs[j] for j in nbrs})
                self.relayed += sum(R.nbytes(recs[j]) for j in nbrs)
                content[R.CONFIG] = mix_config(W, i, nbrs, t, q, q == q_steps - 1, evaluate)
                msgs.append(self._msg(self.node[i], "query.mix", content))
            z, accs = z.clone(), []
            for m in self.grid.send_and_receive(msgs, timeout=self.timeout):
                z[self.client[m.metadata.src_node_id]] = R.from_record(self.parts.layout, m.content[R.ARRAYS])
                accs.append(float(m.content[R.METRICS].get("local_acc", float("nan"))))
        return z, accs

    def run(self) -> None:
        p, rec = self.parts, self.rec
        cfg = p.cfg
        self.setup()
        for t in range(cfg.rounds):
            self.grid.round = t + 1
            self.rejoin(t)
            active = participation(cfg.seed, t, self.n, cfg.algorithm.participation)
            z, losses = self.train(t, active)
            evaluate = rec.is_eval_round(t + 1)
            self.models, accs = self.gossip(t, z, evaluate)
            rg, alive = self.mixing(t), self.alive
            ctx = RoundContext(round=t, active=torch.as_tensor(active & alive), W=None, degrees=rg.degrees,
                               gossip_steps=cfg.algorithm.gossip_steps, lr=p.schedule(t),
                               local_steps=int(p.steps.max()))
            rec.comm_mb += self.relayed / 1e6
            if evaluate:
                rec.local(accs)
                rec.write(t + 1, self.models[torch.as_tensor(alive)], round_row(
                    train_loss=float(np.nanmean(losses)) if losses else float("nan"), gap=rg.gap,
                    gossip_steps=ctx.gossip_steps, comm_mb=rec.comm_mb, active_clients=len(losses), lr=ctx.lr,
                    live_edges=int(rg.degrees.sum()) // 2, lost_nodes=len(self.grid.losses),
                    rejoined_nodes=len(self.grid.rejoins), **p.algo.exchange_metrics()))


def neighbours(W, i: int) -> list[int]:
    """The j != i with W_ij != 0: node i's graph neighbours this step (W dense, or scipy sparse
    above topologies.DENSE_MAX_N nodes)."""
    return sorted(int(j) for j in W[[i]].nonzero()[1] if j != i)


def mix_config(W: np.ndarray, i: int, nbrs: list[int], t: int, q: int, last: bool, evaluate: bool) -> ConfigRecord:
    """The config of node i's query.mix in step q of round t: its row of W (neighbours listed;
    ConfigRecord lists are never empty: [-1] / [0.0] for an isolated node)."""
    return ConfigRecord({"round": t, "step": q, "self-weight": float(W[i, i]),
                         "neighbours": [int(j) for j in nbrs] or [-1], "weights": [float(W[i, j]) for j in nbrs] or [0.0],
                         "last": last, "evaluate": evaluate})


def run_gossip(grid: TolerantGrid, rec: Recorder, timeout: float) -> None:
    from .choco_relay import CompressedRelay  # it extends Relay

    relay = Relay if rec.parts.cfg.algorithm.compression == "none" else CompressedRelay
    relay(grid, rec, timeout).run()
