"""One client on one device: its data shard, its model and its local optimizer.

A SuperNode is client ``i`` of the federation (partition-id). Its shard is either taken from
the whole dataset, loaded and split exactly as `dfl run` does (dfl.data.load_federated with the
config's seed, then client i's indices), or read from a file exported beforehand with
``python -m dfl.flower.shards CONFIG --out DIR`` (DIR/client-<i>.pt: the device holds only its
own data). Local training is the serial engine's (dfl.engines.serial: dfl.optim's torch.optim
classes, the same closure, the same Correction) on a one-client ClientData whose batches come
from dfl.rng.batch_indices with the *global* client id i, so client i draws the same batches
in round t as in `dfl run`.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import optim
from ..algorithms import ALGORITHMS, Correction
from ..bank import Layout
from ..config import Config
from ..data import FederatedData, load_federated
from ..engines import ClientData
from ..engines.serial import SerialEngine
from ..errors import DataError
from ..metrics import evaluate
from ..rundir.checkpoint import plain, safe_load
from ..simulation import build_model, client_steps, local_options, optimizer_hparams
from .settings import Node


@dataclass(frozen=True)
class Shard:
    """Client i's training samples, its held-out local test split, and the data's shape."""

    client_id: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_holdout: torch.Tensor
    y_holdout: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    largest_shard: int = 0
    """The federation's largest training shard: the cap of the batch (dfl.simulation.batch_size);
    0 (shard files exported before it existed): this shard's size."""

    def as_federated(self) -> FederatedData:
        """A one-client FederatedData (pool = the shard) for dfl's ClientData."""
        n = len(self.y_train)
        return FederatedData(name="shard", x_train=self.x_train, y_train=self.y_train,
                             x_test=self.x_holdout, y_test=self.y_holdout,
                             client_train=[torch.arange(n)], client_test=[torch.arange(0)],
                             input_shape=self.input_shape, num_classes=self.num_classes)


def shard_of(fed: FederatedData, i: int) -> Shard:
    """Client i's Shard of a federation; without a local split, the global test set stands in."""
    tr, te = fed.client_train[i], fed.client_test[i]
    x_hold, y_hold = (fed.x_train[te], fed.y_train[te]) if len(te) else (fed.x_test, fed.y_test)
    return Shard(i, fed.x_train[tr], fed.y_train[tr], x_hold, y_hold, tuple(fed.input_shape), fed.num_classes,
                 largest_shard=max(len(t) for t in fed.client_train))


@lru_cache(maxsize=2)
def _federated(cfg: Config) -> FederatedData:
    return load_federated(cfg.data, cfg.seed)


def load_shard(cfg: Config, node: Node) -> Shard:
    """This node's shard: from node.data_dir if set, else from the whole (cached) dataset."""
    if node.data_dir:
        path = Path(node.data_dir).expanduser() / f"client-{node.client_id}.pt"
        if not path.is_file():
            raise DataError(f"node config data-dir: {path} not found; export the shards with "
                            "`python -m dfl.flower.shards CONFIG --out DIR` and copy client-<i>.pt here")
        raw = safe_load(path, path, what="shard file", hint="; export the shards again")
        fields = [f.name for f in dataclasses.fields(Shard)]
        needed = [k for k in fields if k != "largest_shard"]
        if not isinstance(raw, dict) or any(k not in raw for k in needed):
            raise DataError(f"{path}: not a dfl shard file (expected the keys {', '.join(needed)}); "
                            "export the shards with `python -m dfl.flower.shards CONFIG --out DIR`")
        if raw.get("client_id") != node.client_id or raw.get("seed") != cfg.seed:
            raise DataError(f"{path}: holds client {raw.get('client_id')} (seed {raw.get('seed')}), "
                            f"this node is client {node.client_id} (seed {cfg.seed}); re-export the shards")
        return Shard(**{k: tuple(raw[k]) if k == "input_shape" else raw[k] for k in fields if k in raw})
    if node.data_root:
        cfg = cfg.replace(**{"data.root": node.data_root})
    return shard_of(_federated(cfg), node.client_id)


class OneClientData(ClientData):
    """dfl's ClientData for a single client whose random stream is that of global id ``client_id``."""

    def __init__(self, shard: Shard, device: torch.device, seed: int, batch_size: int, augment: str = "none"):
        # the one row's global id is client_id: batches and augmentation draw from its streams
        super().__init__(shard.as_federated(), device, seed, batch_size,
                         client_ids=np.array([shard.client_id]), augment=augment)
        self.client_id = shard.client_id


class LocalClient:
    """Model, layout and serial engine of one client; optimizer state in and out as bytes."""

    def __init__(self, cfg: Config, shard: Shard, device: Optional[torch.device] = None):
        self.cfg, self.shard = cfg, shard
        self.device = device or torch.device("cpu")
        self.model = build_model(cfg, shard.input_shape, shard.num_classes).to(self.device)
        self.layout = Layout.of(dict(self.model.named_parameters()))
        # the batch `dfl run` gives every client: at most the federation's largest shard
        batch = max(1, min(cfg.local.batch_size, shard.largest_shard or len(shard.y_train)))
        self.data = OneClientData(shard, self.device, cfg.seed, batch, augment=cfg.data.augment)
        # one client trained here: engine.backend (a `dfl run` choice, e.g. Ray's, which refuses
        # compressed gossip) does not apply; the node trains as the serial engine does
        algo = ALGORITHMS[cfg.algorithm.name](cfg.replace(**{"engine.backend": "serial"}), cfg.data.num_clients, 1)
        hp = optimizer_hparams(cfg, algo.optimizer_overrides())
        self.engine = SerialEngine(self.model, self.layout, self.data, cfg.local.optimizer, hp, self.device,
                                     local=local_options(cfg))
        self.steps = int(client_steps(cfg, algo, np.array([len(shard.y_train)]), batch)[0])
        self.schedule = optim.schedule(cfg.local.schedule, cfg.local.lr, decay=cfg.local.lr_decay,
                                       total_rounds=cfg.rounds)

    def train(self, row: torch.Tensor, round_: int, correction: Optional[Correction]) -> tuple[torch.Tensor, float]:
        """K local steps from `row` in round `round_` (0-based); returns (new row, mean loss)."""
        bank = row.reshape(1, -1).to(self.device).clone()
        bank, losses = self.engine.train(bank, np.array([True]), np.array([self.steps]),
                                          self.schedule(round_), round_, correction)
        return bank[0], float(losses[0])

    def evaluate(self, row: torch.Tensor) -> tuple[float, float]:
        """(accuracy, loss) of a model row on this client's held-out split."""
        return evaluate(self.model, self.layout, row.to(self.device), self.shard.x_holdout.to(self.device),
                        self.shard.y_holdout.to(self.device))

    def save_state(self) -> bytes:
        buf = io.BytesIO()
        torch.save(plain(self.engine.state_dict()), buf)
        return buf.getvalue()

    def load_state(self, blob: bytes) -> None:
        """The node's optimizer state from save_state's bytes, read with weights_only (tensors and
        plain values): bytes carrying anything else are refused, never unpickled into objects."""
        if blob:
            self.engine.load_state_dict(safe_load(io.BytesIO(blob), "node state", what="optimizer state",
                                                   map_location=self.device))
