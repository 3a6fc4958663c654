"""Real node failures on Flower: a Grid that carries on with the SuperNodes that still answer.

A SuperNode that is killed, loses power or its network mid-round either never replies (the
exchange's `timeout` runs out) or its reply is an error: the SuperLink answers for it with
NODE_UNAVAILABLE once the node has missed its heartbeats (flwr: 2 x 30 s), and a ClientApp that
raises comes back as an error reply too. ``TolerantGrid`` wraps the run's Grid:

    send_and_receive   keeps the good replies; every node whose reply is missing or an error is
                       *lost* (its model on the node went stale: it missed an aggregation or a
                       gossip step), recorded with the round and the reason; messages to lost
                       nodes are not sent again
    get_node_ids       the run's connected nodes minus the lost ones (what Flower's strategies
                       sample); once the run has started (``start``), a node that connects
                       later is in the run only after ``admit``
    admit              (called at the start of every round) lets nodes (re)join: a node that
                       went offline (missed its heartbeats) is lost; a node that connected
                       since (a new SuperNode id, or a lost id activated again) is asked which
                       client it is ("query.identify"); if that client has no live node, the
                       node takes its place (a *rejoin*, recorded with the round); else it is
                       kept waiting until that client's node is lost

and stops the run with a one-line DflError as soon as fewer than ``min_nodes`` nodes remain.
The algorithms then continue on the survivors: FedAvg averages the replies it got (Flower's
strategy does that by itself); the gossip relay rebuilds W_t with topology.mixing on the graph
without the lost nodes' edges, as dfl.faults does for failed links (Metropolis weights stay
symmetric and doubly stochastic on the survivors). A rejoined node is sent what it missed by the
algorithm (dfl.flower.gossip: its neighbours' mean model; dfl.flower.strategy: the global model).

A node is recognised as new by its SuperNode id, or, for a lost id, by a newer activation time
in the SuperLink's node info (a SuperNode with a registered key keeps its id across restarts).

Run-config key ``min-nodes`` (integer): the fewest nodes a round may go on with. 0 (default)
means a majority, ceil(num_clients / 2): a minority of failed devices is tolerated, a run that
lost most of its federation (more likely a systematic fault than bad luck) stops.
"""
from __future__ import annotations

import logging
import math
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


@dataclass(frozen=True)
class Loss:
    """One lost node: its SuperNode id, its client id (-1 if it never said), when and why."""

    node: int
    client: int
    round: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "client": self.client, "round": self.round, "reason": self.reason}


@dataclass(frozen=True)
class Rejoin:
    """A node that took the place of a lost (or never connected) client: its SuperNode id, the
    client, the round it trains again in, and the SuperNode id the client had before (-1: none)."""

    node: int
    client: int
    round: int
    was: int

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "client": self.client, "round": self.round, "was": self.was}


class TolerantGrid:
    """A Grid (any object with get_node_ids / send_and_receive) that survives lost nodes and
    lets them rejoin.

    Attributes:
        round: the round in progress (1-based), set by the caller; stamped on every loss.
        lost: node id -> Loss, for the nodes out of the run now.
        losses: every loss of the run, in order (a node that rejoined keeps its record).
        rejoins: every rejoin of the run, in order.
        clients: node id -> client id, learned from replies whose metrics carry "client_id".
        members: the node ids in the run (None until ``start``: every connected node).
    """

    def __init__(self, grid: Any, min_nodes: int, metrics_key: str = "metrics", num_clients: int = 0):
        self.grid, self.min_nodes, self.metrics_key = grid, min_nodes, metrics_key
        self.num_clients = num_clients
        self.round = 0
        self.lost: dict[int, Loss] = {}
        self.losses: list[Loss] = []
        self.rejoins: list[Rejoin] = []
        self.clients: dict[int, int] = {}
        self.members: set[int] | None = None
        self._activated: dict[int, str] = {}   # node id -> its activation stamp when last looked at
        self._waiting: dict[int, int] = {}     # connected node id -> client, that client's node still live

    def __getattr__(self, name: str) -> Any:  # run, create_message, push / pull_messages, ...
        return getattr(self.grid, name)

    def get_node_ids(self) -> list[int]:
        return [i for i in self.grid.get_node_ids()
                if i not in self.lost and (self.members is None or i in self.members)]

    def start(self, ids: Iterable[int]) -> None:
        """The run starts with the nodes `ids`; nodes connecting later join through ``admit``."""
        self.members = set(ids)
        self._activated.update(self._stamps())

    def _stamps(self) -> dict[int, str]:
        """Connected node id -> when the SuperLink last activated it ("" if the Grid doesn't say)."""
        get_nodes = getattr(self.grid, "get_nodes", None)
        if get_nodes is None:
            return {int(i): "" for i in self.grid.get_node_ids()}
        return {int(n.node_id): str(getattr(n, "last_activated_at", "") or "") for n in get_nodes()}

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
        """Record `node` as lost (again: its record is updated); DflError when fewer than
        min_nodes remain."""
        client = self.clients.get(node, -1) if client is None else client
        loss = Loss(node, client, self.round, " ".join(reason.split()))
        if node in self.lost:
            self.losses[self.losses.index(self.lost[node])] = loss
        else:
            self.losses.append(loss)
        self.lost[node] = loss
        alive = self.alive_count()
        log(logging.WARNING, "dfl: lost SuperNode %s (client %s) in round %s: %s; %s left",
            node, client, self.round, loss.reason[:200], alive)
        self.check(alive)

    def alive_count(self) -> int:
        """Nodes in the run that are not lost (before ``start``: every known node)."""
        if self.members is not None:
            return len(self.members - set(self.lost))
        known = set(self.clients) | set(self.grid.get_node_ids()) | set(self.lost)
        return len(known - set(self.lost))

    def check(self, alive: int) -> None:
        if alive < self.min_nodes:
            last = self.losses[-1] if self.losses else None
            why = f"; last lost: client {last.client} in round {last.round} ({last.reason[:200]})" if last else ""
            raise DflError(f"only {alive} SuperNodes left, fewer than min-nodes={self.min_nodes}: "
                           f"{len(self.lost)} lost{why}")

    # ------------------------------------------------------------------ rejoining nodes
    def admit(self, timeout: float, config: Mapping[str, Any] | None = None) -> list[Rejoin]:
        """Let nodes (re)join at the start of round ``self.round``; returns the rejoins.

        Members that went offline are lost; a node connected since the last look is asked which
        client it is; it takes that client's place if the client has no live node (else it waits
        for that). `config` goes into the "query.identify" message (e.g. "num-clients").
        """
        if self.members is None:
            return []
        stamps = self._stamps()
        for node in sorted(self.members - set(self.lost) - set(stamps)):
            self.mark_lost(node, "went offline (the SuperLink stopped hearing from it)")
        new = [i for i, stamp in stamps.items() if i not in self._waiting and
               not (i in self.members and i not in self.lost) and self._activated.get(i) != stamp]
        self._activated.update({i: stamps[i] for i in new})
        if new:
            self._identify(new, timeout, config or {})
        joined = []
        for node, client in sorted(self._waiting.items(), key=lambda kv: kv[1]):
            if node in stamps and self._free(client):
                del self._waiting[node]
                joined.append(self._join(node, client))
            elif node not in stamps:
                del self._waiting[node]
        return joined

    def _identify(self, nodes: list[int], timeout: float, config: Mapping[str, Any]) -> None:
        """Ask `nodes` which client they are; those that answer wait in self._waiting."""
        from flwr.app import ConfigRecord, RecordDict

        msgs = [Message(RecordDict({"config": ConfigRecord({**config, "round": self.round - 1})}),
                        dst_node_id=i, message_type="query.identify") for i in nodes]
        replies = list(self.grid.send_and_receive(msgs, timeout=timeout))
        # ids exist once the grid has pushed the messages: an error the SuperLink sends on a
        # node's behalf comes from the SuperLink's id and is matched by the message it answers
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs if m.metadata.message_id}
        why = {}
        for r in replies:
            node = dst.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)
            metrics = None if r.has_error() else r.content.metric_records.get(self.metrics_key)
            client = int(metrics["client_id"]) if metrics is not None and "client_id" in metrics else -1
            if client >= 0 and (not self.num_clients or client < self.num_clients):
                self._waiting[node] = client
            else:
                why[node] = f"error {r.error.code}: {r.error.reason}" if r.has_error() else f"client {client}"
        for node in sorted(set(nodes) - set(self._waiting)):
            log(logging.WARNING, "dfl: SuperNode %s connected but is not a client of this run (%s); left out",
                node, " ".join(why.get(node, f"no reply within {timeout:g} s").split())[:200])
        for node, client in self._waiting.items():
            if node in nodes and not self._free(client):
                log(logging.WARNING, "dfl: SuperNode %s says it is client %s, which has a live SuperNode; "
                    "it joins if that one is lost", node, client)

    def _live_clients(self) -> dict[int, int]:
        """client -> node, for the live members whose client is known."""
        return {self.clients[m]: m for m in (self.members or set()) - set(self.lost) if m in self.clients}

    def _free(self, client: int) -> bool:
        live = (self.members or set()) - set(self.lost)
        return client not in self._live_clients() and (not self.num_clients or len(live) < self.num_clients)

    def _join(self, node: int, client: int) -> Rejoin:
        was = next((loss.node for loss in reversed(self.losses) if loss.client == client), -1)
        was = max(was, -1)  # -1 - c: the client never had a node
        self.lost.pop(node, None)
        assert self.members is not None
        self.members.add(node)
        self.clients[node] = client
        rejoin = Rejoin(node, client, self.round, was)
        self.rejoins.append(rejoin)
        log(logging.INFO, "dfl: SuperNode %s (client %s) joins the run in round %s%s; %s nodes in the run",
            node, client, self.round, f" in place of lost SuperNode {was}" if was != -1 else "",
            self.alive_count())
        return rejoin

    def summary(self) -> list[dict[str, Any]]:
        """The losses for the run's manifest, in order."""
        return [loss.as_dict() for loss in self.losses]

    def rejoin_summary(self) -> list[dict[str, Any]]:
        """The rejoins for the run's manifest, in order."""
        return [r.as_dict() for r in self.rejoins]
