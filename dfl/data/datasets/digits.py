"""scikit-learn's 8x8 digits, read from the file scikit-learn ships (no download, no import of
scikit-learn), with the seeded stratified test split scikit-learn's train_test_split would make."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import DATASETS, Pooled, pack


def digits_file() -> Path:
    """scikit-learn's bundled digits.csv.gz, found without importing scikit-learn (0.5 s)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'digits': scikit-learn is not installed (pip install scikit-learn); "
                        "it ships the 8x8 digits")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws: floor(counts / total * draws), the rest to the largest remainders, ties
    broken at random (scikit-learn's rule, so that the split equals its train_test_split)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            take = min(len(inds), need)
            floored[rng.choice(inds, size=take, replace=False)] += 1
            need -= take
            if need == 0:
                break
    return floored.astype(int)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a seeded stratified split, equal to scikit-learn's
    ``train_test_split(..., test_size=test_fraction, stratify=y, random_state=seed)`` (a test
    checks it against scikit-learn) without importing scikit-learn."""
    n = len(y)
    n_test = int(np.ceil(test_fraction * n))
    n_train = n - n_test
    _, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(y_idx, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i, members in enumerate(by_class):
        perm = members.take(rng.permutation(counts[i]), mode="clip")
        train.extend(perm[:n_i[i]])
        test.extend(perm[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


@DATASETS.register("digits")
def load_digits(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); stratified seeded test split
    (the same split as scikit-learn's train_test_split)."""
    data = np.loadtxt(digits_file(), delimiter=",")
    x, y = (data[:, :-1] / 16.0).reshape(-1, 1, 8, 8), data[:, -1].astype(np.int64)
    train, test = stratified_split(y, test_fraction, seed)
    return pack(x[train], y[train], x[test], y[test], 10, "sklearn.datasets.load_digits")
