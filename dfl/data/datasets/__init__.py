"""Pooled datasets: digits (embedded), mnist1d (generated), MNIST / Fashion-MNIST (IDX),
CIFAR-10/100 (pickles), hf:<id>; one module per source, each registering its loaders in DATASETS.

A loader returns ``(x_train, y_train, x_test, y_test, meta)``: float32 tensors, NCHW for
images, normalised per channel with the training set's mean and std; int64 labels; ``meta`` a
dict with input_shape, num_classes, mean, std and source (and, for synthetic data, the clients'
natural partition). Files are read from ``data.root``; a missing or malformed file is a
one-line DataError naming the expected files, the directory and where to get them.

    base.py      the registry, the return type (Pooled), normalisation, data.root checks
    digits.py    scikit-learn's 8x8 digits (embedded) and its stratified split
    mnist1d.py   MNIST-1D, generated offline and cached
    idx.py       MNIST, Fashion-MNIST (IDX files)
    cifar.py     CIFAR-10, CIFAR-100 (python pickle batches, unpickled safely)
    hf.py        Hugging Face datasets through flwr-datasets

Synthetic data (FedProx's synthetic(alpha, beta)) registers itself from dfl.data.synthetic.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import DATASETS, Loader, Pooled, normalize
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits, stratified_split
from .hf import load_hf
from .idx import load_fashion_mnist, load_mnist, read_idx
from .mnist1d import cache_dir, load_mnist1d, mnist1d_arrays

__all__ = ["DATASETS", "Loader", "Pooled", "cache_dir", "load_cifar10", "load_cifar100", "load_dataset",
           "load_digits", "load_fashion_mnist", "load_hf", "load_mnist", "load_mnist1d", "mnist1d_arrays",
           "normalize", "read_idx", "stratified_split"]


def load_dataset(name: str, root: str | Path | None, seed: int, test_fraction: float, **options: Any) -> Pooled:
    """Load a pooled dataset by name ("hf:<id>" goes through flwr-datasets).

    Args:
        name: a name in DATASETS or "hf:<Hugging Face dataset id>".
        root: directory of the files (MNIST / CIFAR); unused by digits and synthetic.
        seed: seed of any split made here (digits' test split, synthetic data).
        test_fraction: share held out as the global test set when a dataset has no test split.
        **options: loader-specific options (synthetic: alpha, beta, dim, samples, num_clients).
    """
    if name.startswith("hf:"):
        return load_hf(name[3:], seed, test_fraction)
    return DATASETS[name](root=root, seed=seed, test_fraction=test_fraction, **options)
