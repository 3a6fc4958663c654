"""Compressed gossip through Flower's relay (dfl.flower.choco_node / choco_relay), in process over
the in-memory Grid of tests/flower_helpers.py: the same numbers as `dfl run` with the same config,
what travels (the encoded messages, counted by comm_mb), consistent public copies on a
time-varying graph, and what stays refused. (test_flower.py: top-k and QSGD on a ring;
test_flower_faults.py: lost and rejoining nodes.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from dfl.compression import VALUE_BYTES, Compressor  # noqa: E402
from dfl.errors import ConfigError  # noqa: E402
from dfl.flower import records as R, server_app  # noqa: E402
from tests.flower_helpers import (MemoryGrid, assert_copies_agree, assert_rows_match, reference,  # noqa: E402
                                  run_config, server_context, task_identity)
from tests.helpers import read_metrics  # noqa: E402

TOPK = "algorithm.compression=topk algorithm.compression_ratio=0.1 algorithm.consensus_step=0.3"


@pytest.fixture(autouse=True)
def identity():
    with task_identity():
        yield


class RecordingGrid(MemoryGrid):
    """A MemoryGrid that keeps every exchange: (messages sent, replies received)."""

    def __init__(self, rc: dict, n: int):
        super().__init__(rc, n)
        self.exchanges: list[tuple[list, list]] = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        self.exchanges.append((list(messages), replies))
        return replies

    def of(self, kind: str) -> list:
        """The messages of type `kind` sent, with their replies: [(message, reply)]."""
        return [(m, r) for msgs, replies in self.exchanges if msgs and msgs[0].metadata.message_type == kind
                for m, r in zip(msgs, replies)]

    def states(self) -> dict:
        """client id -> the node's context.state."""
        return {int(ctx.node_config["partition-id"]): ctx.state for ctx in self.ctx.values()}


def run(tmp_path: Path, sets: str, n: int) -> tuple[list[dict], RecordingGrid]:
    rc = run_config(sets, tmp_path / "run")
    grid = RecordingGrid(rc, n)
    server_app.main(grid, server_context(rc))
    return read_metrics(tmp_path / "run"), grid


@pytest.mark.parametrize("sets, n", [
    # participation 0.5: the nodes that do not train send their first message on "query.encode"
    ("rounds=3 algorithm.name=dfedavgm local.optimizer=sgd data.num_clients=6 algorithm.participation=0.5 "
     "topology.name=ring algorithm.compression=randomk algorithm.compression_ratio=0.2 "
     "algorithm.consensus_step=0.3", 6),
    ("rounds=2 algorithm.name=dpsgd local.optimizer=sgd data.num_clients=5 topology.name=star "
     "algorithm.gossip_steps=2 algorithm.compression=sign algorithm.consensus_step=0.3", 5),
    ("rounds=2 data.num_clients=6 topology.name=ring algorithm.gossip_steps=2 algorithm.compression=qsgd "
     "algorithm.compressed_gossip=naive algorithm.consensus_step=0.3", 6),
])
def test_compressed_relay_matches_dfl(tmp_path, sets, n):
    rows, grid = run(tmp_path, sets, n)
    assert_rows_match(rows, reference(sets))
    assert ("query.encode" in grid.sent) == ("participation" in sets)


def test_what_travels_is_the_encoded_messages_and_comm_mb_counts_them(tmp_path):
    sets = f"rounds=2 algorithm.gossip_steps=2 data.num_clients=6 topology.name=ring {TOPK}"
    rows, grid = run(tmp_path, sets, 6)
    d = sum(int(np.prod(a.shape)) for a in grid.of("query.setup")[0][0].content[R.ARRAYS].values())
    message_bytes = Compressor("topk", ratio=0.1).row_bytes(d)
    assert message_bytes < 0.2 * VALUE_BYTES * d
    mixes = grid.of("query.mix")
    relayed = [rec for m, _ in mixes for rec in m.content.array_records.values()]
    assert len(relayed) == 2 * 2 * 6 * 2  # rounds x Q x nodes x degree, each a neighbour's message
    assert all(R.nbytes(rec) == message_bytes for rec in relayed)
    assert rows[-1]["comm_mb"] == pytest.approx(len(relayed) * message_bytes / 1e6, rel=1e-12)
    assert rows[-1]["comm_mb"] == pytest.approx(reference(sets)[-1]["comm_mb"], rel=1e-12)
    # uplink: the first message with the training reply, the next ones with the mix replies, the model last
    assert all(set(r.content.array_records) == {R.PAYLOAD} for _, r in grid.of("train.gossip"))
    for m, r in mixes:
        last = R.config_of(m.content)["last"]
        assert set(r.content.array_records) == ({R.ARRAYS} if last else {R.PAYLOAD})


def test_time_varying_graph_sends_copies_of_new_neighbours(tmp_path):
    """One-peer exponential graph: a node meets a neighbour whose public copy it does not hold;
    the relay sends it, dense, in place of its message. The models are `dfl run`'s; comm_mb counts
the copies."""
    sets = f"rounds=3 algorithm.gossip_steps=2 data.num_clients=6 topology.name=one_peer_exponential {TOPK}"
    rows, grid = run(tmp_path, sets, 6)
    ref = reference(sets)
    for got, want in zip(rows, ref):
        for key in ("test_acc", "local_test_acc", "train_loss", "consensus"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    copies = [rec for m, _ in grid.of("query.mix") for k, rec in m.content.array_records.items()
              if k.startswith("copy-")]
    d = len(copies[0]["row"].numpy())
    assert copies and all(R.nbytes(rec) == VALUE_BYTES * d for rec in copies)
    extra = VALUE_BYTES * d - Compressor("topk", ratio=0.1).row_bytes(d)  # a copy in place of a message
    assert rows[-1]["comm_mb"] == pytest.approx(ref[-1]["comm_mb"] + len(copies) * extra / 1e6, rel=1e-12)
    last_step = [R.config_of(m.content)["neighbours"] for m in grid.exchanges[-1][0]]
    assert assert_copies_agree(grid.states()) == sum(j >= 0 for nbrs in last_step for j in nbrs) > 0


def test_centralized_algorithm_with_compression_is_refused_in_one_line(tmp_path):
    sets = "rounds=1 algorithm.name=fedavg local.optimizer=sgd algorithm.compression=topk algorithm.consensus_step=0.1"
    with pytest.raises(ConfigError, match="centralized") as info:
        run(tmp_path, sets, 3)
    assert "\n" not in str(info.value)
