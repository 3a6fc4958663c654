"""Files that cannot run code: checkpoints, Flower shard files and node state are read with
torch.load(weights_only=True); a file carrying any other object is refused with one line (exit 2
at the CLI) and the object is never constructed: a payload whose __reduce__ runs a command never
runs it."""
import io
import os

import pytest
import torch

from dfl.cli import main
from dfl.config import Config
from dfl.errors import DflError
from dfl.flower import settings
from dfl.flower.local import LocalClient, load_shard, shard_of
from dfl.flower.shards import export
from dfl.rundir import checkpoint
from tests.conftest import small_config
from tests.helpers import assert_user_error, write_config


class Payload:
    """Unpickling this runs `touch <marker>` (os.system): it must never happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "the payload ran"


def test_the_payload_does_run_when_unpickled_unsafely(tmp_path):
    """The test's payload is live: loaded with weights_only=False it runs its command."""
    m = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save({"x": Payload(m)}, buf)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert m.exists()


def test_poisoned_checkpoint_is_refused_never_run(tmp_path, capsys, marker):
    cfg = write_config(tmp_path / "c.toml", rounds=3, **{"engine.threads": 1})
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    state = checkpoint.load_checkpoint(out)
    state["algorithm"] = {"x": Payload(marker)}  # a checkpoint with all its keys, and one object more
    torch.save(state, out / checkpoint.CHECKPOINT)
    before = (out / "metrics.jsonl").read_bytes()
    assert_user_error(["run", "--resume", str(out), "--quiet"], capsys, "checkpoint refused", "posix.system",
                      str(out / checkpoint.CHECKPOINT))
    assert (out / "metrics.jsonl").read_bytes() == before


def test_checkpoints_hold_only_plain_values(tmp_path):
    """What a run writes loads with weights_only (numpy numbers in the history become floats)."""
    import numpy as np

    checkpoint.safe_save({"round": np.int64(3), "history": [{"acc": np.float32(0.5)}], "a": np.arange(3)},
                      tmp_path / "c.pt")
    got = checkpoint.safe_load(tmp_path / "c.pt", "c.pt")
    assert got["round"] == 3 and type(got["round"]) is int and isinstance(got["history"][0]["acc"], float)
    assert torch.equal(got["a"], torch.arange(3))


def test_poisoned_shard_file_is_refused_never_run(tmp_path, marker):
    cfg = small_config()
    export(cfg, tmp_path)
    good = load_shard(cfg, settings.Node(1, data_dir=str(tmp_path)))
    raw = torch.load(tmp_path / "client-1.pt", weights_only=True)
    torch.save({**raw, "x_train": Payload(marker)}, tmp_path / "client-1.pt")
    with pytest.raises(DflError, match="shard file refused") as exc:
        load_shard(cfg, settings.Node(1, data_dir=str(tmp_path)))
    assert "\n" not in str(exc.value) and "client-1.pt" in str(exc.value)
    assert good.input_shape == (1, 8, 8) and good.client_id == 1  # the good file loaded, with its tuple


def test_a_shard_file_without_the_shard_keys_is_refused(tmp_path):
    cfg = small_config()
    torch.save({"client_id": 0}, tmp_path / "client-0.pt")
    with pytest.raises(DflError, match="not a dfl shard file"):
        load_shard(cfg, settings.Node(0, data_dir=str(tmp_path)))


def test_poisoned_node_state_is_refused_never_run(marker):
    cfg = small_config(**{"local.reset_state": False, "algorithm.name": "dfedavgm", "local.optimizer": "sgd",
                          "local.momentum": 0.9})
    from dfl.data import load_federated

    client = LocalClient(cfg, shard_of(load_federated(cfg.data, cfg.seed), 0))
    client.train(client.layout.row(client.model), 0, None)
    saved = client.engine.state_dict()
    assert saved["opt_state"][0]["state"]  # momentum buffers to carry over
    client.load_state(client.save_state())  # its own state comes back
    got = client.engine.state_dict()["opt_state"][0]["state"]
    assert all(torch.equal(got[k]["momentum_buffer"], v["momentum_buffer"])
               for k, v in saved["opt_state"][0]["state"].items())
    buf = io.BytesIO()
    torch.save({"opt_state": Payload(marker)}, buf)
    with pytest.raises(DflError, match="optimizer state refused"):
        client.load_state(buf.getvalue())


def test_config_key_checkpoint_minutes():
    assert Config().metrics.checkpoint_every == 0 and Config().metrics.checkpoint_minutes == 5.0
