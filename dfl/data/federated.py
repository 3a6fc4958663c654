"""FederatedData: a pooled dataset, its global test set and every client's shard of it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from .datasets import load_dataset
from .partition import partition

HOLDOUT_STREAM = 0x401D


@dataclass(frozen=True)
class FederatedData:
    """All training samples once, the global test set, and per-client index arrays into x_train.

    client_train[i] and client_test[i] are disjoint int64 indices into x_train / y_train:
    client i's local training shard and its held-out local test split.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    client_train: list[Tensor]
    client_test: list[Tensor]
    input_shape: tuple[int, ...]
    num_classes: int

    @property
    def num_clients(self) -> int:
        return len(self.client_train)

    def sizes(self) -> list[int]:
        """Number of local training samples of each client."""
        return [int(idx.numel()) for idx in self.client_train]

    def label_counts(self) -> np.ndarray:
        """(num_clients, num_classes) int64 label histogram of each client's training shard."""
        y = self.y_train.numpy()
        return np.stack([np.bincount(y[idx.numpy()], minlength=self.num_classes)
                         for idx in self.client_train]).astype(np.int64)


def holdout_split(parts: list[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each client's indices (seeded) into local train and local test.

    A client keeps at least one training sample; with fraction > 0 and >= 2 samples it holds out
    at least one; fraction 0 leaves every local test split empty.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, HOLDOUT_STREAM]))
    train, test = [], []
    for idx in parts:
        n = len(idx)
        k = int(round(fraction * n))
        if fraction > 0 and n >= 2:
            k = max(k, 1)
        k = min(k, n - 1)
        perm = rng.permutation(idx)
        train.append(np.sort(perm[k:]))
        test.append(np.sort(perm[:k]))
    return train, test


def load_federated(cfg: DataConfig, seed: int) -> FederatedData:
    """Load cfg.name, partition its training set among cfg.num_clients and hold out local tests.

    synthetic data keeps its natural partition (one generated client per client; data.partition
    is not used); every other dataset is split by PARTITIONERS[cfg.partition].
    """
    if cfg.name == "synthetic":
        x_tr, y_tr, x_te, y_te, meta = load_dataset(
            "synthetic", cfg.root, seed, cfg.test_fraction, num_clients=cfg.num_clients,
            alpha=cfg.synthetic_alpha, beta=cfg.synthetic_beta, dim=cfg.synthetic_dim,
            samples=cfg.synthetic_samples)
        parts = meta["partition"]
    else:
        x_tr, y_tr, x_te, y_te, meta = load_dataset(cfg.name, cfg.root, seed, cfg.test_fraction)
        parts = partition(y_tr.numpy(), cfg.num_clients, cfg.partition, seed, alpha=cfg.alpha,
                          min_size=cfg.min_size, shards_per_client=cfg.shards_per_client,
                          sigma=cfg.quantity_sigma)
    train, test = holdout_split(parts, cfg.holdout_fraction, seed)
    return FederatedData(
        name=cfg.name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        client_train=[torch.from_numpy(i.astype(np.int64)) for i in train],
        client_test=[torch.from_numpy(i.astype(np.int64)) for i in test],
        input_shape=tuple(meta["input_shape"]), num_classes=int(meta["num_classes"]))
