"""Flower apps, in process: run config -> Config, node identity, records, the one-client trainer,
and the whole ServerApp <-> ClientApp protocol over an in-memory Grid (each message handed straight
to the ClientApp of its destination node, with that node's persistent Context). These check
the same numbers as `dfl run` in a second; test_flower_runtime.py repeats it on Flower's runtimes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfl.config import load_config, parse_overrides, to_dict
from dfl.errors import ConfigError, DataError
from dfl.simulation import Simulation

flwr = pytest.importorskip("flwr")
from flwr.app import Context, Message, RecordDict  # noqa: E402

from dfl.flower import client_app, records as R, server_app, settings  # noqa: E402
from dfl.flower.local import LocalClient, OneClientData, load_shard, shard_of  # noqa: E402
from dfl.flower.shards import main as shards_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "experiments/flower_quickstart.toml"


@pytest.fixture(autouse=True)
def task_identity():
    """What Flower's runtime sets in a ServerApp / ClientApp process before messages are built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def run_config(sets: str, out: Path | None = None) -> dict:
    rc = {"config": CONFIG, "set": sets}
    if out is not None:
        rc["out"] = str(out)
    return rc


class MemoryGrid:
    """A Grid whose nodes are ClientApp calls in this process (one Context per node)."""

    def __init__(self, rc: dict, n: int, node_config=None):
        self.ids = [1000 + 7 * i for i in range(n)]
        self.ctx = {nid: Context(run_id=1, node_id=nid, state=RecordDict(), run_config=rc,
                                 node_config=(node_config or {}).get(i, {"partition-id": i, "num-partitions": n}))
                    for i, nid in enumerate(self.ids)}
        self.sent: list[str] = []

    def get_node_ids(self):
        return list(self.ids)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for m in messages:
            self.sent.append(m.metadata.message_type)
            reply = client_app.app(m, self.ctx[m.metadata.dst_node_id])
            replies.append(reply)
        return replies


def run_in_memory(tmp_path: Path, sets: str, n: int) -> list[dict]:
    rc = run_config(sets, tmp_path / "run")
    grid = MemoryGrid(rc, n)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def reference(sets: str) -> list[dict]:
    cfg = load_config(ROOT / CONFIG, parse_overrides(sets.split()))
    return Simulation(cfg.replace(**{"engine.backend": "serial"})).run()


def assert_rows_match(rows: list[dict], ref: list[dict]) -> None:
    assert len(rows) == len(ref)
    for got, want in zip(rows, ref):
        for key in ("round", "test_acc", "test_loss", "local_test_acc", "train_loss", "comm_mb", "spectral_gap",
                    "active_clients", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
        assert got["consensus"] == pytest.approx(want["consensus"], rel=1e-3, abs=1e-9)


# ------------------------------------------------------------------ the protocol, in memory
@pytest.mark.parametrize("sets, n", [
    ("rounds=2 algorithm.name=fedavg local.optimizer=sgd", 3),
    ("rounds=2 algorithm.name=fedsam data.num_clients=4 algorithm.server_lr=0.5", 4),
    ("rounds=3 algorithm.name=mofedsam data.num_clients=4", 4),
])
def test_centralized_through_flower_strategy_matches_dfl(tmp_path, sets, n):
    rows = run_in_memory(tmp_path, sets, n)
    assert_rows_match(rows, reference(sets))
    assert all(r["consensus"] == 0.0 and r["drift"] > 0 for r in rows)


@pytest.mark.parametrize("sets, n", [
    ("rounds=2 data.num_clients=6", 6),
    ("rounds=2 algorithm.name=dfedsam_mgs algorithm.gossip_steps=3 data.num_clients=5 eval_every=2", 5),
    ("rounds=3 algorithm.name=dfedavgm local.optimizer=sgd data.num_clients=6 algorithm.participation=0.5", 6),
    ("rounds=2 algorithm.name=dpsgd local.optimizer=sgd data.num_clients=5 topology.name=star", 5),
])
def test_gossip_relay_matches_dfl(tmp_path, sets, n):
    rows = run_in_memory(tmp_path, sets, n)
    assert_rows_match(rows, reference(sets))
    assert rows[-1]["consensus"] > 0


def test_run_directory_has_dfl_format(tmp_path):
    run_in_memory(tmp_path, "rounds=2 data.num_clients=3", 3)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.toml", "metrics.jsonl", "summary.json", "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"] == "flower" and manifest["flower_server"] == "gossip relay"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and "(Flower)" in summary["label"]
    from dfl.rundir import load_run

    assert load_run(out) is not None  # the plots' reader accepts a Flower run
    cfg = load_config(out / "config.toml")
    assert to_dict(cfg) == to_dict(settings.run_config(run_config("rounds=2 data.num_clients=3")))


def test_wrong_partition_ids_are_reported(tmp_path):
    rc = run_config("rounds=1 data.num_clients=3", tmp_path / "run")
    grid = MemoryGrid(rc, 3, node_config={i: {"partition-id": 0, "num-partitions": 3} for i in range(3)})
    with pytest.raises(Exception, match="client ids"):
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))


# ------------------------------------------------------------------ settings
def test_run_config_loads_dfl_config_with_overrides():
    cfg = settings.run_config({"config": CONFIG, "set": "rounds=3 local.lr=0.05 topology.name=star"})
    assert (cfg.rounds, cfg.local.lr, cfg.topology.name) == (3, 0.05, "star")


@pytest.mark.parametrize("rc, match", [
    ({"config": ""}, "empty"),
    ({"config": "experiments/quickstart.toml"}, "sweep"),
    ({"config": CONFIG, "set": "algorithm.name=pooled"}, "not available through Flower"),
    ({"config": CONFIG, "set": "faults.dropout=0.1"}, "faults"),
    ({"config": CONFIG, "set": "local.lrr=0.1"}, "did you mean"),
])
def test_run_config_errors_are_one_line(rc, match):
    with pytest.raises(ConfigError, match=match) as info:
        settings.run_config(rc)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("node, match", [
    ({}, "partition-id"),
    ({"partition-id": 0, "num-partitions": 4}, "num-partitions=4"),
    ({"partition-id": 3, "num-partitions": 3}, r"\[0, 2\]"),
])
def test_node_identity_errors(node, match):
    cfg = settings.run_config({"config": CONFIG})
    with pytest.raises(ConfigError, match=match):
        settings.node_identity(node, cfg)


def test_pyproject_declares_a_valid_flower_app():
    from flwr.common.config import validate_config
    import tomllib

    raw = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ok, errors, _ = validate_config(raw, check_module=True, project_dir=ROOT)
    assert ok, errors
    app_cfg = raw["tool"]["flwr"]["app"]["config"]
    assert settings.run_config(app_cfg).data.num_clients == 3


# ------------------------------------------------------------------ client side
def test_records_round_trip():
    cfg = settings.run_config({"config": CONFIG})
    shard = load_shard(cfg, settings.Node(1))
    client = LocalClient(cfg, shard)
    row = torch.randn(client.layout.size)
    rec = R.to_record(client.layout, row)
    assert list(rec.keys()) == list(client.layout.names)
    assert torch.equal(R.from_record(client.layout, rec), row)


def test_one_client_batches_are_the_global_clients():
    from dfl.engines import ClientData

    cfg = settings.run_config({"config": CONFIG, "set": "data.num_clients=5"})
    from dfl.data import load_federated

    fed = load_federated(cfg.data, cfg.seed)
    full = ClientData(fed, torch.device("cpu"), cfg.seed, 8)
    one = OneClientData(shard_of(fed, 3), torch.device("cpu"), cfg.seed, 8)
    _, glob_full = full.batches(np.array([3]), 4, 2)
    _, glob_one = one.batches(np.array([0]), 4, 2)
    assert torch.equal(full.x[glob_full], one.x[glob_one])


def test_exported_shards_give_the_same_client(tmp_path):
    cfg = settings.run_config({"config": CONFIG})
    assert shards_main([CONFIG, "--out", str(tmp_path)]) == 0
    from_file = load_shard(cfg, settings.Node(2, data_dir=str(tmp_path)))
    direct = load_shard(cfg, settings.Node(2))
    assert torch.equal(from_file.x_train, direct.x_train) and torch.equal(from_file.y_holdout, direct.y_holdout)
    with pytest.raises(DataError, match="holds client"):
        (tmp_path / "client-2.pt").rename(tmp_path / "x.pt")
        (tmp_path / "client-1.pt").rename(tmp_path / "client-2.pt")
        load_shard(cfg, settings.Node(2, data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="not found"):
        load_shard(cfg, settings.Node(0, data_dir=str(tmp_path / "nowhere")))


def test_shards_command_user_error_exits_2(tmp_path, capsys):
    assert shards_main([str(tmp_path / "missing.toml"), "--out", str(tmp_path)]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_client_reply_messages_carry_uniform_weight():
    cfg = settings.run_config({"config": CONFIG})
    ctx = Context(run_id=1, node_id=5, node_config={"partition-id": 0, "num-partitions": 3}, state=RecordDict(),
                  run_config={"config": CONFIG})
    client = LocalClient(cfg, load_shard(cfg, settings.Node(0)))
    content = RecordDict({R.ARRAYS: R.to_record(client.layout, client.layout.row(client.model))})
    from flwr.app import ConfigRecord

    content[R.CONFIG] = ConfigRecord({"server-round": 1})
    reply = client_app.app(Message(content=content, dst_node_id=5, message_type="train"), ctx)
    assert not reply.has_error()
    assert reply.content[R.METRICS][R.WEIGHT] == 1.0 and np.isfinite(reply.content[R.METRICS]["train_loss"])
    assert "optimizer" in ctx.state[R.STATE]
    assert sys.modules["dfl.flower.client_app"] is client_app
