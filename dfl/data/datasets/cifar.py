"""CIFAR-10 and CIFAR-100 from their python pickle batches in data.root, unpickled safely
(dicts, bytes and numpy arrays only: nothing in the file can run code)."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import DATASETS, Pooled, data_root, pack

URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-100 python version)",
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickle only dicts / lists / bytes and numpy arrays (the CIFAR batches), nothing callable."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise ValueError(f"not a dict with keys b'data' and {label_key!r}")
    x = np.asarray(d[b"data"], dtype=np.uint8)
    y = np.asarray(d[label_key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise ValueError(f"data {x.shape} / labels {y.shape}, expected (N, 3072) / (N,)")
    return x.reshape(-1, 3, 32, 32), y


def _load_cifar(name: str, root: Any, subdir: str, train: list[str], test: str,
                label_key: bytes, num_classes: int) -> Pooled:
    expected = f"{subdir}/{{{', '.join(train + [test])}}}"
    base = data_root(name, root, expected, URLS[name])
    folder = base / subdir if (base / subdir).is_dir() else base
    out = []
    for names in (train, [test]):
        xs, ys = [], []
        for fname in names:
            path = folder / fname
            if not path.is_file():
                raise DataError(f"dataset {name!r}: {fname} not found in {str(folder)!r}; data.root should "
                                f"hold {expected} (get them from {URLS[name]})")
            try:
                x, y = _read_batch(path, label_key)
            except (pickle.UnpicklingError, ValueError, EOFError, OSError, TypeError, AttributeError,
                    IndexError, KeyError) as exc:
                raise DataError(f"dataset {name!r}: {str(path)!r} is not a valid CIFAR python batch ({exc}); "
                                f"expected {expected} from {URLS[name]}") from None
            xs.append(x)
            ys.append(y)
        out += [np.concatenate(xs), np.concatenate(ys)]
    x_tr, y_tr, x_te, y_te = out
    return pack(x_tr / 255.0, y_tr, x_te / 255.0, y_te, num_classes, str(folder))


@DATASETS.register("cifar10")
def load_cifar10(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """CIFAR-10 from cifar-10-batches-py/data_batch_1..5 and test_batch in data.root."""
    return _load_cifar("cifar10", root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                       "test_batch", b"labels", 10)


@DATASETS.register("cifar100")
def load_cifar100(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """CIFAR-100 (fine labels) from cifar-100-python/train and test in data.root."""
    return _load_cifar("cifar100", root, "cifar-100-python", ["train"], "test", b"fine_labels", 100)
