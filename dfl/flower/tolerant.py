"""Real node failures on Flower: a Grid that carries on with the SuperNodes that still answer.

A SuperNode that is killed, loses power or its network mid-round either never replies (the
exchange's `timeout` runs out) or its reply is an error: the SuperLink answers for it with
NODE_UNAVAILABLE once the node has missed its heartbeats (flwr: 2 x 30 s), and a ClientApp that
raises comes back as an error reply too. ``TolerantGrid`` wraps the run's Grid:

    send_and_receive   keeps the good replies; every node whose reply is missing or an error is
                       *lost* for the rest of the run (its model on the node went stale: it
                       missed an aggregation or a gossip step), recorded with the round and the
                       reason; messages to lost nodes are not sent again
    get_node_ids       the connected nodes minus the lost ones (what Flower's strategies sample)

and stops the run with a one-line DflError as soon as fewer than ``min_nodes`` nodes remain.
The algorithms then continue on the survivors: FedAvg averages the replies it got (Flower's
strategy does that by itself); the gossip relay rebuilds W_t with topology.mixing on the graph
without the lost nodes' edges, as dfl.faults does for failed links (Metropolis weights stay
symmetric and doubly stochastic on the survivors).

Run-config key ``min-nodes`` (integer): the fewest nodes a round may go on with. 0 (default)
means a majority, ceil(num_clients / 2): a minority of failed devices is tolerated, a run that
lost most of its federation (more likely a systematic fault than bad luck) stops.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from flwr.app import Message
from flwr.common.logger import log

from ..errors import ConfigError, DflError


def min_nodes(raw: Mapping[str, Any], n: int) -> int:
    """The run config's "min-nodes" for a federation of n clients (0 / absent: ceil(n / 2))."""
    value = raw.get("min-nodes", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"run config min-nodes: must be an integer, got {value!r}")
    value = int(value)
    if not 0 <= value <= n:
        raise ConfigError(f"run config min-nodes: must be in [0, {n}] (data.num_clients), got {value}")
    return value or math.ceil(n / 2)


def wait_for_nodes(grid: Any, n: int, timeout: float, at_least: int | None = None) -> list[int]:
    """Node ids once n SuperNodes are connected; after `timeout` seconds, those connected if
    there are `at_least` of them (default n), else DflError."""
    deadline = time.monotonic() + timeout
    while len(ids := list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            if len(ids) >= (n if at_least is None else at_least):
                return ids
            raise DflError(f"only {len(ids)} of {n} SuperNodes connected after {timeout:.0f} s; "
                           "start one SuperNode per client (data.num_clients)")
        time.sleep(0.5)
    return ids


@dataclass(frozen=True)
class Loss:
    """One lost node: its SuperNode id, its client id (-1 if it never said), when and why."""

    node: int
    client: int
    round: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "client": self.client, "round": self.round, "reason": self.reason}


class TolerantGrid:
    """A Grid (any object with get_node_ids / send_and_receive) that survives lost nodes.

    Attributes:
        round: the round in progress (1-based), set by the caller; stamped on every loss.
        lost: node id -> Loss.
        clients: node id -> client id, learned from replies whose metrics carry "client_id".
    """

    def __init__(self, grid: Any, min_nodes: int, metrics_key: str = "metrics"):
        self.grid, self.min_nodes, self.metrics_key = grid, min_nodes, metrics_key
        self.round = 0
        self.lost: dict[int, Loss] = {}
        self.clients: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:  # run, create_message, push / pull_messages, ...
        return getattr(self.grid, name)

    def get_node_ids(self) -> list[int]:
        return [i for i in self.grid.get_node_ids() if i not in self.lost]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """The good replies to `messages`; nodes without one are marked lost (DflError below min_nodes)."""
        messages = [m for m in messages if m.metadata.dst_node_id not in self.lost]
        if not messages:
            return []
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
        good, answered, reasons = [], set(), {}
        for r in replies:
            if r.has_error():  # from the node (ClientApp raised) or from the SuperLink on its behalf
                node = dst.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)
                reasons[node] = f"error {r.error.code}: {r.error.reason}"
            else:
                good.append(r)
                answered.add(r.metadata.src_node_id)
                self._learn(r.metadata.src_node_id, r)
        for m in messages:
            node = m.metadata.dst_node_id
            if node not in answered:
                reason = reasons.get(node, f"no reply within {timeout:g} s" if timeout else "no reply")
                self.mark_lost(node, reason)
        return good

    def _learn(self, node: int, reply: Message) -> None:
        metrics = reply.content.metric_records.get(self.metrics_key)
        if metrics is not None and "client_id" in metrics:
            self.clients[node] = int(metrics["client_id"])

    def mark_lost(self, node: int, reason: str, client: int | None = None) -> None:
        """Record `node` as lost; DflError when fewer than min_nodes remain."""
        client = self.clients.get(node, -1) if client is None else client
        self.lost[node] = Loss(node, client, self.round, " ".join(reason.split()))
        alive = self.alive_count()
        log(logging.WARNING, "dfl: lost SuperNode %s (client %s) in round %s: %s; %s left",
            node, client, self.round, self.lost[node].reason[:200], alive)
        self.check(alive)

    def alive_count(self) -> int:
        """Nodes known to the run (ever answered or now connected) that are not lost."""
        known = set(self.clients) | set(self.grid.get_node_ids()) | set(self.lost)
        return len(known - set(self.lost))

    def check(self, alive: int) -> None:
        if alive < self.min_nodes:
            last = list(self.lost.values())[-1] if self.lost else None
            why = f"; last lost: client {last.client} in round {last.round} ({last.reason[:200]})" if last else ""
            raise DflError(f"only {alive} SuperNodes left, fewer than min-nodes={self.min_nodes}: "
                           f"{len(self.lost)} lost{why}")

    def summary(self) -> list[dict[str, Any]]:
        """The losses for the run's manifest, in order."""
        return [loss.as_dict() for loss in self.lost.values()]
