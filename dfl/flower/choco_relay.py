"""Compressed gossip through the relay: the server side of dfl.flower.choco_node.

With algorithm.compression the relay forwards each node's compressed message (dfl.compression's
wire format) to its graph neighbours instead of models. One round t:

    active nodes     train; reply with their first message q_i         ("train.gossip")
    inactive nodes   reply with the first message of their model       ("query.encode")
    Q times          node i gets its row of W_t and the messages of its neighbours, mixes
                     (dfl.choco's step, on the node) and replies with its next message; after
                     the last step, with its model (for the metrics, as the uncompressed relay)

The server keeps every node's public copy (X_hat += the decoded messages, as `dfl run` does) and,
per node, whose copies that node holds up to date: after setup all of them (every copy is the
initial model), after a step exactly those of that step's neighbours. A neighbour whose copy the
node does not hold (new on a time-varying graph, rejoined, or the node itself rejoined) comes as
the server's copy, one dense row ("copy-<j>"). A rejoining node starts with x_hat_i = its new
model (the server's copy too; every other node's copy of it is dropped), so the copies stay
consistent through losses, rejoins and graph changes. comm_mb counts the bytes relayed to the
nodes: on a static graph without losses, Q x degree messages per node, `dfl run`'s comm_mb; a
time-varying graph adds the dense copies.
"""
from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from .. import choco
from . import records as R
from .gossip import Relay, mix_config, neighbours


class CompressedRelay(Relay):
    """The gossip relay with compressed messages (Choco-Gossip or the naive average)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compress = choco.compressor(self.parts.cfg)
        choco_mode = self.parts.cfg.algorithm.compressed_gossip == "choco"
        #: every node's public copy x_hat (choco; None: naive), as dfl.choco keeps it
        self.x_hat = self.parts.initial_bank() if choco_mode else None
        #: client -> the clients whose copies that node holds up to date
        self.held = {c: set(range(self.n)) for c in range(self.n)}
        #: client -> its message of the current gossip step
        self.messages: dict[int, ArrayRecord] = {}

    def rejoin(self, t: int) -> list[int]:
        joined = super().rejoin(t)
        for c in joined:
            if self.x_hat is not None:
                self.x_hat[c] = self.models[c]
            self.held[c] = set()
            for held in self.held.values():
                held.discard(c)
        return joined

    def train(self, t: int, active: np.ndarray) -> tuple[torch.Tensor, list[float]]:
        """Active nodes train, the others encode; keeps every node's first message. Returns the
        models the server knows (the z being gossiped stays on the nodes) and the training losses."""
        conf = ConfigRecord({"round": t, "mix-before": self.mix_before})
        msgs = [self._msg(self.node[i], "train.gossip" if active[i] else "query.encode", RecordDict({R.CONFIG: conf}))
                for i in np.flatnonzero(self.alive)]
        self.messages, losses = {}, []
        for m in self.grid.send_and_receive(msgs, timeout=self.timeout):
            self.messages[self.client[m.metadata.src_node_id]] = m.content[R.PAYLOAD]
            if "train_loss" in m.content[R.METRICS]:
                losses.append(float(m.content[R.METRICS]["train_loss"]))
        return self.models, losses

    def gossip(self, t: int, z: torch.Tensor, evaluate: bool) -> tuple[torch.Tensor, list[float]]:
        """Q compressed relay steps; returns the nodes' models after the last and their local
        accuracies (with `evaluate`). self.relayed: the bytes relayed to the nodes this round."""
        q_steps = self.parts.cfg.algorithm.gossip_steps
        self.relayed, z, accs = 0, z.clone(), []
        for q in range(q_steps):
            W = self.mixing(t).W
            self._publish()
            last = q == q_steps - 1
            msgs = []
            for i in np.flatnonzero(self.alive):
                nbrs = neighbours(W, i)
                content = self._relayed_to(i, nbrs)
                content[R.CONFIG] = mix_config(W, i, nbrs, t, q, last, evaluate)
                msgs.append(self._msg(self.node[i], "query.mix", content))
            self.messages = {}
            for m in self.grid.send_and_receive(msgs, timeout=self.timeout):
                c = self.client[m.metadata.src_node_id]
                if last:
                    z[c] = R.from_record(self.parts.layout, m.content[R.ARRAYS])
                    accs.append(float(m.content[R.METRICS].get("local_acc", float("nan"))))
                else:
                    self.messages[c] = m.content[R.PAYLOAD]
        return z, accs

    def _publish(self) -> None:
        """X_hat_j += the decoded message of every node j of this step (choco)."""
        if self.x_hat is None:
            return
        d = self.x_hat.shape[1]
        for c, message in self.messages.items():
            self.x_hat[c] += self.compress.decode_wire(R.unpayload(message), d)[0].to(self.x_hat.dtype)

    def _relayed_to(self, i: int, nbrs: list[int]) -> RecordDict:
        """What node i gets from its neighbours: their messages, or the server's copy of a
        neighbour whose copy node i does not hold; counts the bytes into self.relayed."""
        content = RecordDict()
        for j in nbrs:
            if self.x_hat is None or j in self.held[i]:
                content[f"nbr-{j}"] = self.messages[j]
            else:
                content[f"copy-{j}"] = R.row_record(self.x_hat[j])
        if self.x_hat is not None:
            self.held[i] = set(nbrs)
        self.relayed += sum(R.nbytes(rec) for rec in content.array_records.values())
        return content
