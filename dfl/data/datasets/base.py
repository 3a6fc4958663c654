"""What every dataset loader shares: the registry, the return type, normalisation and checks.

A loader returns ``(x_train, y_train, x_test, y_test, meta)`` (`Pooled`): float32 tensors, NCHW
for images, normalised per channel with the training set's mean and std; int64 labels; ``meta``
a dict with input_shape, num_classes, mean, std and source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ...errors import DataError
from ...registry import Registry

Pooled = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]
Loader = Callable[..., Pooled]
DATASETS: Registry[Loader] = Registry("dataset")


def normalize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
    """Per-channel (axis 1) standardisation with the training set's statistics -> float32 tensors."""
    axes = (0,) + tuple(range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    m, s = mean.reshape(shape), std.reshape(shape)

    def apply(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - m) / s).astype(np.float32))

    return apply(x_train), apply(x_test), mean.tolist(), std.tolist()


def pack(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
         num_classes: int, source: str) -> Pooled:
    """A loader's return value from raw arrays: labels checked against num_classes, images
    normalised (`normalize`), labels as int64 tensors. Raises DataError for a label out of range."""
    for y, split in ((y_train, "train"), (y_test, "test")):
        if len(y) and (int(np.min(y)) < 0 or int(np.max(y)) >= num_classes):
            raise DataError(f"dataset {source!r}: {split} labels must lie in [0, {num_classes}), "
                            f"got [{int(np.min(y))}, {int(np.max(y))}]")
    xt, xs, mean, std = normalize(x_train, x_test)
    meta = {"input_shape": tuple(x_train.shape[1:]), "num_classes": int(num_classes),
            "mean": mean, "std": std, "source": source}
    return (xt, torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
            xs, torch.from_numpy(np.asarray(y_test, dtype=np.int64)), meta)


def data_root(name: str, root: str | Path | None, expected: str, url: str) -> Path:
    """``data.root`` as a directory for dataset `name`; else a DataError naming the files it
    should hold (`expected`) and where to get them (`url`)."""
    if root is None:
        raise DataError(f"dataset {name!r}: set data.root to the directory holding {expected} "
                        f"(get them from {url})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset {name!r}: data.root {str(path)!r} is not a directory; it should hold "
                        f"{expected} (get them from {url})")
    return path
