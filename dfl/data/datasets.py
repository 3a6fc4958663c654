"""Pooled datasets: digits (embedded), mnist1d (generated), MNIST / Fashion-MNIST (IDX),
CIFAR-10/100 (pickles), hf:<id>.

A loader returns ``(x_train, y_train, x_test, y_test, meta)``: float32 tensors, NCHW for
images, normalised per channel with the training set's mean and std; int64 labels; ``meta`` a
dict with input_shape, num_classes, mean, std and source (and, for synthetic data, the clients'
natural partition). Files are read from ``data.root``; a missing or malformed file is a
one-line DataError naming the expected files, the directory and where to get them.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry

Pooled = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]
Loader = Callable[..., Pooled]
DATASETS: Registry[Loader] = Registry("dataset")

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
URLS = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-100 python version)",
}
IDX_LABELS, IDX_IMAGES = 2049, 2051


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


# ---------------------------------------------------------------------------- helpers

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


def _pack(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
          num_classes: int, source: str) -> Pooled:
    for y, split in ((y_train, "train"), (y_test, "test")):
        if len(y) and (int(np.min(y)) < 0 or int(np.max(y)) >= num_classes):
            raise DataError(f"dataset {source!r}: {split} labels must lie in [0, {num_classes}), "
                            f"got [{int(np.min(y))}, {int(np.max(y))}]")
    xt, xs, mean, std = normalize(x_train, x_test)
    meta = {"input_shape": tuple(x_train.shape[1:]), "num_classes": int(num_classes),
            "mean": mean, "std": std, "source": source}
    return (xt, torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
            xs, torch.from_numpy(np.asarray(y_test, dtype=np.int64)), meta)


def _root(name: str, root: str | Path | None, expected: str) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r}: set data.root to the directory holding {expected} "
                        f"(get them from {URLS[name]})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset {name!r}: data.root {str(path)!r} is not a directory; it should hold "
                        f"{expected} (get them from {URLS[name]})")
    return path


# ---------------------------------------------------------------------------- digits

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
    return _pack(x[train], y[train], x[test], y[test], 10, "sklearn.datasets.load_digits")


# ---------------------------------------------------------------------------- MNIST-1D (generated)

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

    The file, cache_dir()/mnist1d-<version>.npz, is written atomically (temporary file, then
    os.replace); an unreadable or unwritable cache only means generating again (~1.5 s).
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
        _save_atomic(path, arrays)
    return arrays


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    d = mnist1d_arrays()  # shared by the process: _pack copies (normalises) x, the labels are copied here
    x, y, xt, yt, meta = _pack(d["x"][:, None], d["y"].copy(), d["x_test"][:, None], d["y_test"].copy(),
                               10, "mnist1d")
    meta["input_shape"] = tuple(d["x"].shape[1:])
    return x[:, 0], y, xt[:, 0], yt, meta


# ---------------------------------------------------------------------------- MNIST (IDX)

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
    base = _root(name, root, expected)
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
    return _pack(x_tr[:, None] / 255.0, y_tr, x_te[:, None] / 255.0, y_te, max(num_classes, 10), str(base))


@DATASETS.register("mnist")
def load_mnist(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """MNIST from its four IDX files in data.root (plain or .gz; torchvision's MNIST/raw works too)."""
    return _load_idx_dataset("mnist", root, "MNIST")


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """Fashion-MNIST from its four IDX files in data.root (same names and format as MNIST)."""
    return _load_idx_dataset("fashion_mnist", root, "FashionMNIST")


# ---------------------------------------------------------------------------- CIFAR (pickles)

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
    base = _root(name, root, expected)
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
    return _pack(x_tr / 255.0, y_tr, x_te / 255.0, y_te, num_classes, str(folder))


@DATASETS.register("cifar10")
def load_cifar10(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """CIFAR-10 from cifar-10-batches-py/data_batch_1..5 and test_batch in data.root."""
    return _load_cifar("cifar10", root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                       "test_batch", b"labels", 10)


@DATASETS.register("cifar100")
def load_cifar100(root: Any = None, seed: int = 0, test_fraction: float = 0.2) -> Pooled:
    """CIFAR-100 (fine labels) from cifar-100-python/train and test in data.root."""
    return _load_cifar("cifar100", root, "cifar-100-python", ["train"], "test", b"fine_labels", 100)


# ---------------------------------------------------------------------------- Hugging Face

def _hf_arrays(ds: Any, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
    cols = list(ds.column_names)
    xkey = next((k for k in ("img", "image", "pixel_values") if k in cols), None)
    ykey = next((k for k in ("label", "fine_label", "labels") if k in cols), None)
    if xkey is None or ykey is None:
        raise DataError(f"dataset 'hf:{dataset_id}': need an image column (img/image) and a label column "
                        f"(label/fine_label), found {cols}")
    x = np.stack([np.asarray(im, dtype=np.float32) for im in ds[xkey]]) / 255.0
    x = x[:, None] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))
    return x, np.asarray(ds[ykey], dtype=np.int64)


def load_hf(dataset_id: str, seed: int, test_fraction: float) -> Pooled:
    """An image-classification dataset from the Hugging Face Hub through flwr-datasets (optional extra)."""
    try:
        from flwr_datasets import FederatedDataset
    except ImportError:
        raise DataError(f"dataset 'hf:{dataset_id}' needs flwr-datasets: pip install \"dfl[hf]\"") from None
    try:
        fds = FederatedDataset(dataset=dataset_id, partitioners={"train": 1})
        train = fds.load_split("train")
        try:
            test = fds.load_split("test")
        except (ValueError, KeyError):
            test = None
    except Exception as exc:  # network, unknown id, ...: one line for the user
        raise DataError(f"dataset 'hf:{dataset_id}': could not load through flwr-datasets ({exc})") from None
    x_tr, y_tr = _hf_arrays(train, dataset_id)
    if test is not None:
        x_te, y_te = _hf_arrays(test, dataset_id)
    else:
        perm = np.random.default_rng(seed).permutation(len(y_tr))
        cut = int(round(len(perm) * (1 - test_fraction)))
        (x_tr, x_te), (y_tr, y_te) = (x_tr[perm[:cut]], x_tr[perm[cut:]]), (y_tr[perm[:cut]], y_tr[perm[cut:]])
    feature = getattr(train, "features", {}).get("label") if hasattr(train, "features") else None
    num_classes = int(getattr(feature, "num_classes", 0) or int(max(y_tr.max(), y_te.max())) + 1)
    return _pack(x_tr, y_tr, x_te, y_te, num_classes, f"hf:{dataset_id}")
