"""Datasets and their federated split.

    fed = dfl.data.load_federated(cfg.data, seed)      # FederatedData

Datasets (registry DATASETS, or "hf:<id>"): digits (scikit-learn's 8x8 digits, embedded, the
default), mnist1d (generated offline by the mnist1d package, cached), synthetic (FedProx
synthetic(alpha, beta), natural partition), mnist, fashion_mnist (IDX files), cifar10, cifar100
(python pickle batches) read from data.root, and any Hugging Face image dataset through the
optional flwr-datasets extra. Partitioners (registry PARTITIONERS): iid, dirichlet,
dirichlet_prior, shards, quantity. Training batches can be augmented (dfl.data.augment:
crop_flip). Everything is deterministic given the seed.
"""
from . import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from .datasets import DATASETS, load_dataset, normalize
from .federated import FederatedData, holdout_split, load_federated
from .partition import PARTITIONERS, partition

__all__ = ["DATASETS", "PARTITIONERS", "FederatedData", "holdout_split", "load_dataset",
           "load_federated", "normalize", "partition"]
