"""MNIST-1D (Greydanus & Steinbach 2024), generated offline by the mnist1d package and cached
in the process and on disk (dfl's cache directory), never downloaded."""
from __future__ import annotations

import contextlib
import functools
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...files import atomic_write
from .base import DATASETS, Pooled, pack


def cache_dir() -> Path:
    """dfl's on-disk cache: $DFL_CACHE_DIR, else $XDG_CACHE_HOME/dfl, else ~/.cache/dfl."""
    if os.environ.get("DFL_CACHE_DIR"):
        return Path(os.environ["DFL_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dfl"


def _generate_mnist1d() -> dict[str, np.ndarray]:
    """mnist1d.data.make_dataset with the package's default args (seed 42): no download.

    make_dataset seeds numpy's and Python's global generators (mnist1d.utils.set_seed); their
    states are restored afterwards, so loading the data changes no other randomness.
    """
    import random

    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("dataset 'mnist1d': the mnist1d package is not installed (pip install mnist1d)") from None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x": d["x"].astype(np.float64), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float64), "y_test": d["y_test"].astype(np.int64)}


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> dict[str, np.ndarray]:
    """The MNIST-1D arrays, generated once per process and cached on disk (per package version).

    The file, cache_dir()/mnist1d-<version>.npz, is written atomically (dfl.files.atomic_write:
    readers never see half a file); an unreadable or unwritable cache only means generating again (~1.5 s).
    """
    from importlib import metadata

    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        raise DataError("dataset 'mnist1d': the mnist1d package is not installed (pip install mnist1d)") from None
    path = cache_dir() / f"mnist1d-{version}.npz"
    keys = ("x", "y", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    arrays = _generate_mnist1d()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return arrays


@DATASETS.register("mnist1d")
def load_mnist1d(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """MNIST-1D (Greydanus & Steinbach 2024, "Scaling Down Deep Learning with MNIST-1D"): 4,000
    train / 1,000 test sequences of 40 features, 10 classes, input shape (40,).

    Generated offline by the mnist1d package with its default args (its own seed 42, the data
    of the paper's benchmarks), never downloaded: the data set is fixed, dfl's seed does not
    change it (it drives the partition and the initialisation); test_fraction is unused (the
    package's 80/20 split). Standardised with the training set's mean and std over all 40
    positions (one channel, as per-channel normalisation of images), which keeps the shape of
    every signal.
    """
    d = mnist1d_arrays()  # shared by the process: pack copies (normalises) x, the labels are copied here
    x, y, xt, yt, meta = pack(d["x"][:, None], d["y"].copy(), d["x_test"][:, None], d["y_test"].copy(),
                              10, "mnist1d")
    meta["input_shape"] = tuple(d["x"].shape[1:])
    return x[:, 0], y, xt[:, 0], yt, meta
