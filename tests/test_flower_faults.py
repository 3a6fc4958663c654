"""Real node failures on Flower (dfl.flower.tolerant): a SuperNode that stops answering is lost,
the run goes on with the others while at least `min-nodes` remain, and the loss is recorded.

Fast: the in-memory Grid of tests/flower_helpers.py with a node that falls silent (no reply: the exchange
times out) or answers with an error (what the SuperLink sends for a node that missed its
heartbeats), and nodes that come back (a new SuperNode id, or the old id activated again) and
rejoin. Slow: a real deployment (flower-superlink + 3 flower-supernode on 127.0.0.1, the helpers
of tests/flower_helpers.py) whose SuperNode 2 is SIGKILLed after round 1 and started again.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")
from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.proto.node_pb2 import NodeInfo  # noqa: E402

import topologies  # noqa: E402
from dfl.errors import ConfigError, DflError  # noqa: E402
from dfl.flower import records as R, server_app, tolerant  # noqa: E402
from dfl.flower.tolerant import TolerantGrid, min_nodes  # noqa: E402
from tests.flower_helpers import (MemoryGrid, assert_copies_agree, reference, run_config,  # noqa: E402
                                   task_identity, unavailable)
from tests.helpers import read_metrics  # noqa: E402


@pytest.fixture(autouse=True)
def identity():
    """What Flower's runtime sets in a ServerApp / ClientApp process before messages are built."""
    with task_identity():
        yield


def round_of(m: Message) -> int:
    """The (1-based) round a server message belongs to."""
    conf = dict(m.content.config_records.get("config", {}))
    return int(conf["server-round"]) if "server-round" in conf else int(conf.get("round", -1)) + 1


def no_reply(grid: MemoryGrid, m: Message, mode: str) -> list:
    """What the ServerApp gets for ``m`` from a node that is down: nothing ("silent"), or the
    SuperLink's Node Unavailable error ("error")."""
    grid.sent.append(f"lost {m.metadata.message_type}")
    return [unavailable(m)] if mode == "error" else []


class FailingGrid(MemoryGrid):
    """MemoryGrid whose client `dead` stops answering from round `from_round` (1-based) on, at the
    first message of type `at` (any type if None): "silent" sends nothing back, "error" an error reply."""

    def __init__(self, rc: dict, n: int, dead: int, from_round: int, mode: str = "silent", at: str | None = None):
        super().__init__(rc, n)
        self.dead, self.from_round, self.mode, self.at = self.ids[dead], from_round, mode, at
        self.down = False

    def deliver(self, m: Message) -> list:
        node = m.metadata.dst_node_id
        if node == self.dead and not self.down and round_of(m) >= self.from_round \
                and self.at in (None, m.metadata.message_type):
            self.down = True
        if node == self.dead and self.down:
            return no_reply(self, m, self.mode)
        return super().deliver(m)


class RejoiningGrid(MemoryGrid):
    """MemoryGrid whose client `dead` falls silent (or answers errors) from round `down` on and is
    back from round `back` on: a restarted SuperNode with a new id and a fresh Context (insecure
    SuperLink), or, with same_id, its old id activated again (registered key), which get_nodes
    shows by a new activation stamp. Records the models of query.setup messages and the last
    query.mix reply of every node."""

    NEW = 4242

    def __init__(self, rc: dict, n: int, dead: int, down: int, back: int, same_id: bool = False,
                 mode: str = "silent", claims: int | None = None):
        super().__init__(rc, n)
        self.rc, self.n, self.dead, self.down_round, self.back_round = rc, n, dead, down, back
        self.same_id, self.mode = same_id, mode
        self.old = self.ids[dead]
        self.new = self.old if same_id else self.NEW
        self.claims = dead if claims is None else claims  # partition-id of the node that comes
        self.seen, self.is_back = 0, False
        self.setups: list[tuple[int, Any, dict]] = []  # (node, model, the last mix replies then)
        self.mixed: dict[int, RecordDict] = {}

    def _update(self) -> None:
        if not self.is_back and self.seen >= self.back_round - 1:
            self.is_back = True
            self.ctx[self.new] = Context(run_id=1, node_id=self.new, state=RecordDict(), run_config=self.rc,
                                         node_config={"partition-id": self.claims, "num-partitions": self.n})
            if not self.same_id:
                self.ids.append(self.new)

    def get_node_ids(self):
        self._update()
        return list(self.ids)

    def get_nodes(self):
        self._update()
        again = self.same_id and self.is_back
        return [NodeInfo(node_id=i, last_activated_at="again" if again and i == self.old else "first")
                for i in self.get_node_ids()]

    def deliver(self, m: Message) -> list:
        node, kind = m.metadata.dst_node_id, m.metadata.message_type
        self.seen = max(self.seen, round_of(m))
        dead = node == self.old and self.down_round <= round_of(m) and not (self.same_id and self.is_back)
        restarted = self.is_back and not self.same_id and self.claims == self.dead  # the old process is gone
        if dead or (node == self.old and restarted):
            return no_reply(self, m, self.mode)
        if kind == "query.setup":
            self.setups.append((node, m.content[R.ARRAYS], dict(self.mixed)))
        replies = super().deliver(m)
        if kind == "query.mix" and R.ARRAYS in replies[0].content.array_records:  # compressed: the last step
            self.mixed[node] = replies[0].content[R.ARRAYS]
        return replies


def run_grid(tmp_path: Path, grid, rc: dict) -> tuple[list, dict]:
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))
    rows = read_metrics(tmp_path / "run")
    return rows, json.loads((tmp_path / "run" / "manifest.json").read_text())


def run_failing(tmp_path: Path, sets: str, n: int, rc_extra: dict | None = None, **fail) -> tuple[list, dict]:
    rc = {**run_config(sets, tmp_path / "run"), "timeout": 5, **(rc_extra or {})}
    return run_grid(tmp_path, FailingGrid(rc, n, **fail), rc)


def run_rejoining(tmp_path: Path, sets: str, n: int, **kw) -> tuple[list, dict, RejoiningGrid]:
    rc = {**run_config(sets, tmp_path / "run"), "timeout": 5}
    grid = RejoiningGrid(rc, n, **kw)
    return (*run_grid(tmp_path, grid, rc), grid)


def test_gossip_goes_on_without_a_silent_node(tmp_path):
    sets = "rounds=3 data.num_clients=6 topology.name=ring"
    rows, manifest = run_failing(tmp_path, sets, 6, dead=2, from_round=2)
    assert [r["lost_nodes"] for r in rows] == [0, 1, 1]
    assert [r["active_clients"] for r in rows] == [6, 5, 5]
    ref = reference(sets)
    assert rows[0]["test_acc"] == pytest.approx(ref[0]["test_acc"], abs=1e-6)  # before the loss: dfl run
    G = topologies.build("ring", 6, 0)
    G.remove_edges_from(list(G.edges(2)))  # the survivors form a path 3-4-5-0-1
    W = topologies.mixing_matrix(G, "metropolis")
    keep = [0, 1, 3, 4, 5]
    assert rows[1]["spectral_gap"] == pytest.approx(topologies.spectral_gap(W[np.ix_(keep, keep)]))
    assert rows[1]["live_edges"] == 4 and np.isfinite(rows[2]["test_acc"])
    assert manifest["num_clients"] == 6 and manifest["min_nodes"] == 3
    (loss,) = manifest["lost_nodes"]
    assert (loss["client"], loss["round"]) == (2, 2) and "no reply within 5 s" in loss["reason"]


def test_gossip_node_lost_mid_gossip_with_an_error_reply(tmp_path):
    sets = "rounds=2 data.num_clients=5 algorithm.gossip_steps=3 topology.name=complete"
    rows, manifest = run_failing(tmp_path, sets, 5, dead=4, from_round=1, mode="error", at="query.mix")
    assert [r["lost_nodes"] for r in rows] == [1, 1] and [r["active_clients"] for r in rows] == [5, 4]
    (loss,) = manifest["lost_nodes"]
    assert (loss["client"], loss["round"]) == (4, 1) and "Node Unavailable" in loss["reason"]


def test_compressed_gossip_goes_on_without_a_node_lost_mid_gossip(tmp_path):
    sets = ("rounds=2 data.num_clients=5 algorithm.gossip_steps=3 topology.name=complete algorithm.compression=topk "
            "algorithm.compression_ratio=0.1 algorithm.consensus_step=0.3")
    rc = {**run_config(sets, tmp_path / "run"), "timeout": 5}
    grid = FailingGrid(rc, 5, dead=4, from_round=2, mode="error", at="query.mix")
    rows, manifest = run_grid(tmp_path, grid, rc)
    assert [r["lost_nodes"] for r in rows] == [0, 1] and np.isfinite(rows[1]["test_acc"])
    assert rows[0]["test_acc"] == pytest.approx(reference(sets)[0]["test_acc"], abs=1e-6)
    survivors = {i: grid.ctx[grid.ids[i]].state for i in range(4)}
    assert assert_copies_agree(survivors) == 4 * 3  # the survivors' last step: a complete graph of 4


def test_fedavg_averages_the_replies_that_came(tmp_path):
    sets = "rounds=3 data.num_clients=4 algorithm.name=fedavg local.optimizer=sgd"
    rows, manifest = run_failing(tmp_path, sets, 4, dead=1, from_round=2, mode="error")
    assert [r["active_clients"] for r in rows] == [4, 3, 3]
    assert [r["lost_nodes"] for r in rows] == [0, 1, 1]
    assert rows[0]["test_acc"] == pytest.approx(reference(sets)[0]["test_acc"], abs=1e-6)
    assert manifest["lost_nodes"][0]["client"] == 1 and manifest["flower_server"] == "FedAvg"


def test_fedavg_node_lost_at_evaluation(tmp_path):
    sets = "rounds=2 data.num_clients=3 algorithm.name=fedavg local.optimizer=sgd"
    rows, manifest = run_failing(tmp_path, sets, 3, dead=0, from_round=1, at="evaluate")
    assert [r["active_clients"] for r in rows] == [3, 2] and [r["lost_nodes"] for r in rows] == [1, 1]


@pytest.mark.parametrize("sets", ["rounds=3 data.num_clients=4",
                                  "rounds=3 data.num_clients=4 algorithm.name=fedavg local.optimizer=sgd"])
def test_run_stops_below_min_nodes(tmp_path, sets):
    with pytest.raises(DflError, match=r"only 3 SuperNodes left, fewer than min-nodes=4: 1 lost; last lost: "
                                       r"client 3 in round 2") as info:
        run_failing(tmp_path, sets, 4, {"min-nodes": 4}, dead=3, from_round=2)
    assert "\n" not in str(info.value)
    assert [r["round"] for r in read_metrics(tmp_path / "run")] == [1]  # round 1 kept


def test_a_client_missing_at_setup_is_lost_from_the_start(tmp_path):
    rows, manifest = run_failing(tmp_path, "rounds=1 data.num_clients=4", 4, dead=0, from_round=0)
    assert rows[0]["lost_nodes"] == 1 and rows[0]["active_clients"] == 3
    assert manifest["lost_nodes"][0]["client"] == 0 and manifest["lost_nodes"][0]["round"] == 0


# ------------------------------------------------------------------ nodes that come back
def test_gossip_node_rejoins_with_its_neighbours_mean(tmp_path):
    sets = "rounds=3 data.num_clients=6 topology.name=ring"
    rows, manifest, grid = run_rejoining(tmp_path, sets, 6, dead=2, down=2, back=3)
    assert [(r["active_clients"], r["lost_nodes"], r["rejoined_nodes"]) for r in rows] == [(6, 0, 0), (5, 1, 0),
                                                                                        (6, 1, 1)]
    assert rows[2]["live_edges"] == 6  # its row of W is rebuilt on the whole ring
    W = topologies.mixing_matrix(topologies.build("ring", 6, 0), "metropolis")
    assert rows[2]["spectral_gap"] == pytest.approx(topologies.spectral_gap(W))
    assert manifest["rejoined_nodes"] == [{"node": grid.NEW, "client": 2, "round": 3, "was": grid.old}]
    assert manifest["lost_nodes"][0]["client"] == 2 and np.isfinite(rows[2]["test_acc"])
    (model, mixed), = [(m, mixed) for nd, m, mixed in grid.setups if nd == grid.NEW]
    nbrs = [mixed[grid.ids[1]], mixed[grid.ids[3]]]  # clients 1 and 3, after round 2's gossip
    for k in model.keys():
        assert np.allclose(model[k].numpy(), (nbrs[0][k].numpy() + nbrs[1][k].numpy()) / 2, atol=1e-6)
    assert grid.sent.count("query.identify") == 1


def test_compressed_gossip_node_rejoins_with_consistent_copies(tmp_path):
    """The rejoining node starts with x_hat = its new model and gets its neighbours' copies from
    the relay; its neighbours get its copy: every copy agrees with its owner's afterwards."""
    sets = ("rounds=4 data.num_clients=6 topology.name=ring algorithm.gossip_steps=2 algorithm.compression=topk "
            "algorithm.compression_ratio=0.1 algorithm.consensus_step=0.3")
    rows, manifest, grid = run_rejoining(tmp_path, sets, 6, dead=2, down=2, back=3)
    assert [(r["active_clients"], r["lost_nodes"], r["rejoined_nodes"]) for r in rows] == [
        (6, 0, 0), (5, 1, 0), (6, 1, 1), (6, 1, 1)]
    assert all(np.isfinite(r["test_acc"]) for r in rows)
    assert rows[0]["test_acc"] == pytest.approx(reference(sets)[0]["test_acc"], abs=1e-6)
    states = {int(c.node_config["partition-id"]): c.state for node, c in grid.ctx.items() if node != grid.old}
    assert assert_copies_agree(states) == 6 * 2


def test_a_node_back_before_its_loss_is_noticed_waits_for_it(tmp_path):
    """The restarted SuperNode connects while its old id still counts as live: it waits, and
    takes the client's place in the round after the old id is lost."""
    rows, manifest, grid = run_rejoining(tmp_path, "rounds=3 data.num_clients=5", 5, dead=4, down=2, back=2)
    assert [(r["active_clients"], r["rejoined_nodes"]) for r in rows] == [(5, 0), (4, 0), (5, 1)]
    assert manifest["rejoined_nodes"][0]["round"] == 3 and grid.sent.count("query.identify") == 1


def test_gossip_node_rejoins_under_its_old_id(tmp_path):
    rows, manifest, grid = run_rejoining(tmp_path, "rounds=3 data.num_clients=4", 4, dead=0, down=2, back=3,
                                         same_id=True, mode="error")
    assert [(r["active_clients"], r["lost_nodes"], r["rejoined_nodes"]) for r in rows] == [(4, 0, 0), (3, 1, 0),
                                                                                        (4, 1, 1)]
    assert manifest["rejoined_nodes"] == [{"node": grid.old, "client": 0, "round": 3, "was": grid.old}]


def test_fedavg_node_rejoins_and_gets_the_global_model(tmp_path):
    sets = "rounds=3 data.num_clients=4 algorithm.name=fedavg local.optimizer=sgd"
    rows, manifest, grid = run_rejoining(tmp_path, sets, 4, dead=1, down=2, back=3, mode="error")
    assert [(r["active_clients"], r["lost_nodes"], r["rejoined_nodes"]) for r in rows] == [(4, 0, 0), (3, 1, 0),
                                                                                        (4, 1, 1)]
    assert manifest["rejoined_nodes"][0]["client"] == 1 and manifest["rejoined_nodes"][0]["round"] == 3


@pytest.mark.parametrize("sets", ["rounds=2 data.num_clients=3",
                                  "rounds=2 data.num_clients=3 algorithm.name=fedavg local.optimizer=sgd"])
def test_a_second_node_claiming_a_live_client_stays_out(tmp_path, sets):
    rows, manifest, grid = run_rejoining(tmp_path, sets, 3, dead=0, down=99, back=2, claims=1)
    assert [(r["active_clients"], r["rejoined_nodes"]) for r in rows] == [(3, 0), (3, 0)]
    assert manifest["rejoined_nodes"] == [] and manifest["lost_nodes"] == []
    assert rows[1]["test_acc"] == pytest.approx(reference(sets)[1]["test_acc"], abs=1e-6)
    assert grid.sent.count("query.identify") == 1 and grid.sent.count("train.gossip") + grid.sent.count("train") == 6


@pytest.mark.parametrize("raw, n, want", [({}, 6, 3), ({}, 5, 3), ({"min-nodes": 2}, 5, 2),
                                          ({"min-nodes": 5.0}, 5, 5), ({"min-nodes": 0}, 1, 1)])
def test_min_nodes_default_is_a_majority(raw, n, want):
    assert min_nodes(raw, n) == want


@pytest.mark.parametrize("value", [1.5, -1, 7, "two", True])
def test_min_nodes_errors_are_one_line(value):
    with pytest.raises(ConfigError, match="min-nodes") as info:
        min_nodes({"min-nodes": value}, 6)
    assert "\n" not in str(info.value)


def test_tolerant_grid_drops_messages_to_lost_nodes():
    class Echo:
        def get_node_ids(self):
            return [1, 2, 3]

        def send_and_receive(self, messages, *, timeout=None):
            return [Message(RecordDict(), reply_to=m) for m in messages if m.metadata.dst_node_id != 2]

    grid = TolerantGrid(Echo(), min_nodes=1)
    msgs = lambda: [Message(RecordDict(), dst_node_id=i, message_type="query") for i in (1, 2, 3)]  # noqa: E731
    assert len(grid.send_and_receive(msgs(), timeout=1)) == 2 and set(grid.lost) == {2}
    assert grid.get_node_ids() == [1, 3] and len(grid.send_and_receive(msgs(), timeout=1)) == 2


def test_a_new_node_whose_query_gets_an_error_is_left_out_for_that_error(monkeypatch):
    said = []
    monkeypatch.setattr(tolerant, "log", lambda level, msg, *args: said.append(msg % args))

    class Unreachable(MemoryGrid):
        def deliver(self, m):
            return [unavailable(m)]

    link = Unreachable({}, 2)
    grid = TolerantGrid(link, min_nodes=1)
    grid.start(link.ids)
    link.ids.append(4242)  # connects, then misses its heartbeats before it answers
    assert grid.admit(timeout=5) == []
    (line,) = [x for x in said if x.startswith("dfl: SuperNode 4242 connected")]
    assert "Node Unavailable" in line, line

# ------------------------------------------------------------------ a real deployment
@pytest.mark.slow
def test_deployment_supernode_killed_and_restarted_rejoins(tmp_path):
    """3 SuperNodes, DFedSAM on K3, 4 rounds; SuperNode 2 is SIGKILLed once round 1's row is
    written and started again at once (a new SuperNode id). Round 2 waits `timeout` for the dead
    node and goes on with nodes 0 and 1; in a later round the restarted node is admitted as
    client 2, gets its neighbours' mean model, trains again, and the run finishes."""
    from tests.flower_helpers import (BIN, Processes, env_for, flwr_run, free_port, start_federation,
                                      write_flwr_config)

    port = free_port()
    write_flwr_config(tmp_path / "home", port)
    procs = Processes(tmp_path)
    out, t0 = tmp_path / "out", time.monotonic()
    try:
        start_federation(procs, tmp_path, port, ["--insecure"], ["--insecure"])
        victim = procs.procs[-1]  # start_federation starts the SuperLink, then SuperNodes 0, 1, 2
        done: list[BaseException | None] = []
        runner = threading.Thread(target=lambda: done.append(_catch(
            flwr_run, tmp_path / "home", "rounds=4 engine.threads=1", out, ["--run-config", "timeout=25"], 600)))
        runner.start()
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            assert runner.is_alive() and time.monotonic() - t0 < 300, "round 1 never finished"
            time.sleep(0.2)
        os.killpg(victim.pid, signal.SIGKILL)
        again = tmp_path / "node2-again"
        again.mkdir()
        procs.start("supernode2-again", [str(BIN / "flower-supernode"), "--insecure", "--superlink",
                                         f"127.0.0.1:{port}", "--port", str(free_port()),
                                         "--node-config", "partition-id=2 num-partitions=3"], env_for(again), again)
        runner.join(timeout=600)
        assert done and done[0] is None, done
        rows = read_metrics(out)
        got = [(r["round"], r["lost_nodes"], r["active_clients"], r["rejoined_nodes"]) for r in rows]
        print("rows (round, lost, active, rejoined):", got)
        assert got[:2] == [(1, 0, 3, 0), (2, 1, 2, 0)] and len(got) == 4
        back = next(r for r in rows if r["rejoined_nodes"] == 1)  # round 3 unless the restart was slow
        assert back["active_clients"] == 3 and back["live_edges"] == 3 and rows[-1]["rejoined_nodes"] == 1
        assert rows[-1]["active_clients"] == 3 and np.isfinite(rows[-1]["test_acc"])
        manifest = json.loads((out / "manifest.json").read_text())
        (loss,), (rejoin,) = manifest["lost_nodes"], manifest["rejoined_nodes"]
        assert loss["client"] == 2 and loss["round"] == 2
        assert rejoin["client"] == 2 and rejoin["round"] == back["round"] and rejoin["was"] == loss["node"]
        assert rejoin["node"] != loss["node"]  # an insecure SuperLink gives the restarted node a new id
    except BaseException:
        print(procs.tail())
        raise
    finally:
        procs.stop()
    print(f"deployment with a SuperNode killed and restarted took {time.monotonic() - t0:.0f} s")


def _catch(fn, *args) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as e:  # reported by the test thread
        return e
    return None
