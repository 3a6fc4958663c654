"""MNIST and Fashion-MNIST from their four IDX files in data.root (plain or .gz)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import DATASETS, Pooled, data_root, pack

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
URLS = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
}
IDX_LABELS, IDX_IMAGES = 2049, 2051


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file (plain or .gz) of unsigned bytes; raise ValueError if malformed."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 8:
        raise ValueError("file too short for an IDX header")
    (got,) = struct.unpack(">i", raw[:4])
    if got != magic:
        raise ValueError(f"magic number {got}, expected {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{body.size} data bytes for dimensions {dims}")
    return body.reshape(dims)


def _find(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for cand in (d / stem, d / f"{stem}.gz"):
            if cand.is_file():
                return cand
    return None


def _load_idx_dataset(name: str, root: Any, subdir: str) -> Pooled:
    expected = ", ".join(MNIST_FILES) + " (or .gz)"
    base = data_root(name, root, expected, URLS[name])
    dirs = [base, base / subdir / "raw", base / subdir]
    arrays = []
    for stem in MNIST_FILES:
        path = _find(dirs, stem)
        if path is None:
            raise DataError(f"dataset {name!r}: {stem}[.gz] not found in {str(base)!r}; it should hold "
                            f"{expected} (get them from {URLS[name]})")
        try:
            arrays.append(read_idx(path, IDX_IMAGES if "images" in stem else IDX_LABELS))
        except (ValueError, OSError, EOFError, struct.error) as exc:
            raise DataError(f"dataset {name!r}: {str(path)!r} is not a valid IDX file ({exc}); "
                            f"expected {expected} from {URLS[name]}") from None
    x_tr, y_tr, x_te, y_te = arrays
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"dataset {name!r}: {split} images {x.shape} and labels {y.shape} do not match "
                            f"in {str(base)!r}; expected {expected} from {URLS[name]}")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return pack(x_tr[:, None] / 255.0, y_tr, x_te[:, None] / 255.0, y_te, max(num_classes, 10), str(base))


@DATASETS.register("mnist")
def load_mnist(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """MNIST from its four IDX files in data.root (plain or .gz; torchvision's MNIST/raw works too)."""
    return _load_idx_dataset("mnist", root, "MNIST")


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """Fashion-MNIST from its four IDX files in data.root (same names and format as MNIST)."""
    return _load_idx_dataset("fashion_mnist", root, "FashionMNIST")
