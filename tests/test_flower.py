"""Flower apps, in process: run config -> Config, node identity, records, the one-client engine,
and the whole ServerApp <-> ClientApp protocol over an in-memory Grid (each message handed straight
to the ClientApp of its destination node, with that node's persistent Context). These check
the same numbers as `dfl run` in a second; test_flower_runtime.py repeats it on Flower's runtimes.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch

from dfl.config import load_config, to_dict
from dfl.errors import ConfigError, DataError, DflError

flwr = pytest.importorskip("flwr")
from flwr.app import Context, Message, RecordDict  # noqa: E402

from dfl.flower import client_app, federation, records as R, server_app, settings  # noqa: E402
from dfl.flower.local import LocalClient, OneClientData, load_shard, shard_of  # noqa: E402
from dfl.flower.shards import main as shards_main  # noqa: E402
from tests.flower_helpers import (CONFIG, ROOT, MemoryGrid, SimulationGrid, assert_rows_match, reference,  # noqa: E402
                                  run_config, run_in_memory, server_context, task_identity)
from tests.helpers import read_metrics  # noqa: E402



@pytest.fixture(autouse=True)
def identity():
    """What Flower's runtime sets in a ServerApp / ClientApp process before messages are built."""
    with task_identity():
        yield


# ------------------------------------------------------------------ the protocol, in memory
@pytest.mark.parametrize("sets, n", [
    ("rounds=2 algorithm.name=fedavg local.optimizer=sgd", 3),
    ("rounds=2 algorithm.name=fedsam data.num_clients=4 algorithm.server_lr=0.5", 4),
    ("rounds=3 algorithm.name=mofedsam data.num_clients=4", 4),
])
def test_centralized_through_flower_strategy_matches_dfl(tmp_path, sets, n):
    rows = run_in_memory(tmp_path, sets, n)
    assert_rows_match(rows, reference(sets))  # the drift too
    assert all(r["consensus"] == 0.0 for r in rows)


@pytest.mark.parametrize("sets, n", [
    ("rounds=2 data.num_clients=6 topology.name=ring", 6),
    ("rounds=2 algorithm.name=dfedsam_mgs algorithm.gossip_steps=3 data.num_clients=5 eval_every=2 "
     "topology.name=ring", 5),
    ("rounds=3 algorithm.name=dfedavgm local.optimizer=sgd data.num_clients=6 algorithm.participation=0.5 "
     "topology.name=ring", 6),
    ("rounds=2 algorithm.name=dpsgd local.optimizer=sgd data.num_clients=5 topology.name=star", 5),
    ("rounds=3 algorithm.name=dfedavgm local.optimizer=sgd data.num_clients=6 topology.name=one_peer_exponential", 6),
    # compressed gossip (Choco): the nodes exchange top-k / QSGD messages, comm_mb their bytes
    ("rounds=2 algorithm.gossip_steps=2 data.num_clients=6 topology.name=ring algorithm.compression=topk "
     "algorithm.compression_ratio=0.1 algorithm.consensus_step=0.3", 6),
    ("rounds=2 algorithm.gossip_steps=2 data.num_clients=6 topology.name=ring algorithm.compression=qsgd "
     "algorithm.levels=3 algorithm.consensus_step=0.3", 6),
])
def test_gossip_relay_matches_dfl(tmp_path, sets, n):
    rows = run_in_memory(tmp_path, sets, n)
    ref = reference(sets)
    assert_rows_match(rows, ref)
    if "compression=" in sets:
        assert [r["compression_ratio"] for r in rows] == [r["compression_ratio"] for r in ref]
        assert rows[-1]["compression_ratio"] < 0.2


@pytest.mark.parametrize("extra", ["", " algorithm.compression=topk algorithm.compression_ratio=0.1 "
                                         "algorithm.consensus_step=0.3"])
def test_gossip_relay_with_a_sparse_w(tmp_path, monkeypatch, extra):
    """Above topologies.DENSE_MAX_N nodes W is scipy sparse: the relay reads its rows the same way."""
    import topologies.mixing

    sets = "rounds=2 algorithm.gossip_steps=2 data.num_clients=6 topology.name=ring" + extra
    monkeypatch.setattr(topologies.mixing, "DENSE_MAX_N", 4)  # pretend 6 clients is a huge federation
    assert_rows_match(run_in_memory(tmp_path, sets, 6), reference(sets))


def test_run_directory_has_dfl_format(tmp_path):
    run_in_memory(tmp_path, "rounds=2 data.num_clients=3", 3)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.toml", "metrics.jsonl", "summary.json", "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"] == "flower" and manifest["flower_server"] == "gossip relay"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and "(Flower)" in summary["label"]
    from dfl.rundir.read import load_run

    assert load_run(out) is not None  # the plots' reader accepts a Flower run
    cfg = load_config(out / "config.toml")
    assert to_dict(cfg) == to_dict(settings.run_config(run_config("rounds=2 data.num_clients=3")))


def test_wrong_partition_ids_are_reported(tmp_path):
    rc = run_config("rounds=1 data.num_clients=3", tmp_path / "run")
    grid = MemoryGrid(rc, 3, node_config={i: {"partition-id": 0, "num-partitions": 3} for i in range(3)})
    with pytest.raises(Exception, match="client ids"):
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))


# ------------------------------------------------------------------ the federation's size
def test_simulation_fits_num_clients_to_the_federation_when_left_open(tmp_path, monkeypatch):
    """Bare `flwr run .`: the app's default config (3 clients) on Flower's default federation of
    2 simulated SuperNodes runs with 2 clients, and says so."""
    said = []
    monkeypatch.setattr(federation, "log", lambda level, msg, *args: said.append(msg % args))
    rc = {"config": CONFIG, "set": "rounds=2", "out": str(tmp_path / "run")}
    grid = SimulationGrid(rc, 2)
    t0 = time.monotonic()
    server_app.main(grid, server_context(rc))
    rows = read_metrics(tmp_path / "run")
    assert_rows_match(rows, reference("rounds=2 data.num_clients=2"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["num_clients"], manifest["flower_runtime"]) == (2, "simulation")
    assert load_config(tmp_path / "run" / "config.toml").data.num_clients == 2
    assert any("data.num_clients=2" in line and '"num-supernodes=3"' in line for line in said), said
    assert time.monotonic() - t0 < 120


@pytest.mark.parametrize("rc", [{"config": CONFIG, "set": "rounds=1 data.num_clients=3"},
                                {"config": str(ROOT / CONFIG), "set": "rounds=1"},
                                {"config": CONFIG, "set": "rounds=1 data.num_clients=2"}])
def test_simulation_of_another_size_stops_at_once_with_the_fix(tmp_path, rc):
    rc = {**rc, "out": str(tmp_path / "run")}
    grid = SimulationGrid(rc, 4 if "=2" in rc["set"] else 2)
    t0 = time.monotonic()
    with pytest.raises(DflError, match=r'the simulation federation has \d SuperNodes but data.num_clients=\d .*'
                                       r'--federation-config "num-supernodes=\d"') as info:
        server_app.main(grid, server_context(rc))
    assert "\n" not in str(info.value) and "simulation-config --num-supernodes" in str(info.value)
    assert grid.sent == [] and time.monotonic() - t0 < 10  # no message, no waiting for nodes


@pytest.mark.parametrize("rc, want", [({"config": CONFIG}, True), ({"config": CONFIG, "set": "rounds=2"}, True),
                                      ({"config": CONFIG, "set": "rounds=2 data.num_clients=3"}, False),
                                      ({"config": "experiments/quickstart.toml"}, False)])
def test_num_clients_is_open_only_in_the_apps_default_config(rc, want):
    assert settings.default_run_config()["config"] == CONFIG
    assert settings.leaves_num_clients_open(rc) is want


def test_deployment_waits_for_supernodes_and_says_how_many_are_there(monkeypatch):
    class Arriving:
        def __init__(self):
            self.t0 = time.monotonic()

        def get_node_ids(self):
            return list(range(min(3, 1 + int((time.monotonic() - self.t0) / 0.8))))

    said = []
    monkeypatch.setattr(federation, "log", lambda level, msg, *args: said.append(msg % args))
    monkeypatch.setattr(federation, "PROGRESS_EVERY", 0.2)
    assert federation.wait_for_nodes(Arriving(), 3, timeout=60) == [0, 1, 2]
    assert said[0] == "dfl: 1 of 3 SuperNodes connected; waiting up to 60 s"
    assert any(line.startswith("dfl: 2 of 3 SuperNodes connected; waiting up to") for line in said)
    assert len(said) >= 4  # every PROGRESS_EVERY seconds, not only when the count changes
    with pytest.raises(DflError, match="only 1 of 3 SuperNodes connected after 1 s"):
        federation.wait_for_nodes(type("One", (), {"get_node_ids": lambda self: [7]})(), 3, timeout=1)


def test_nodes_build_the_config_with_the_servers_client_count():
    ctx = Context(run_id=1, node_id=5, node_config={"partition-id": 1, "num-partitions": 2}, state=RecordDict(),
                  run_config={"config": CONFIG})
    from flwr.app import ConfigRecord

    msg = Message(content=RecordDict({R.CONFIG: ConfigRecord({"num-clients": 2})}), dst_node_id=5,
                  message_type="query.identify")
    reply = client_app.app(msg, ctx)
    assert not reply.has_error() and reply.content[R.METRICS]["client_id"] == 1.0
    with pytest.raises(ConfigError, match="num-partitions=2 but data.num_clients=3"):  # the config's count
        client_app.app(Message(content=RecordDict(), dst_node_id=5, message_type="query.identify"), ctx)


def test_an_existing_run_directory_names_the_flower_fix(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    rc = run_config("rounds=1", tmp_path / "run")
    with pytest.raises(DflError, match="overwrite=true"):
        server_app.main(MemoryGrid(rc, 3), server_context(rc))


# ------------------------------------------------------------------ settings
def test_run_config_loads_dfl_config_with_overrides():
    cfg = settings.run_config({"config": CONFIG, "set": "rounds=3 local.lr=0.05 topology.name=star"})
    assert (cfg.rounds, cfg.local.lr, cfg.topology.name) == (3, 0.05, "star")


@pytest.mark.parametrize("rc, match", [
    ({"config": ""}, "empty"),
    ({"config": "experiments/quickstart.toml"}, "sweep"),
    ({"config": CONFIG, "set": "algorithm.name=pooled"}, "not available through Flower"),
    ({"config": CONFIG, "set": "faults.dropout=0.1"}, "faults"),
    ({"config": CONFIG, "set": "algorithm.compression=topk"}, "consensus_step"),
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


def test_the_relay_reads_what_gossip_mixes_from_the_algorithm():
    """Algorithm.mixes: D-PSGD mixes the start-of-round models, the others the trained ones; an
    algorithm that does not gossip is not the relay's."""
    from dfl.flower.gossip import mix_before

    assert mix_before("dpsgd") and not mix_before("dfedavg") and not mix_before("dfedsam_mgs")
    with pytest.raises(ConfigError, match="algorithm.name: 'fedavg' aggregates in a way"):
        mix_before("fedavg")
