"""Dataset loaders on small files in the real formats, and their errors."""
import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfl.data import DATASETS, load_dataset, normalize
from dfl.errors import ConfigError, DataError
from tests.helpers import write_cifar_batch

MNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(arr: np.ndarray) -> bytes:
    magic = 2051 if arr.ndim == 3 else 2049
    return struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_mnist(root, n_train=30, n_test=12, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


def test_registry():
    assert {"digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= set(DATASETS.names())
    with pytest.raises(ConfigError, match="cifar10"):
        load_dataset("cifar-10", None, 0, 0.2)


def test_digits():
    x, y, xt, yt, meta = load_dataset("digits", None, 0, 0.2)
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert meta["input_shape"] == (1, 8, 8) and meta["num_classes"] == 10
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-3
    # stratified: every class in the test split in proportion
    assert torch.bincount(yt, minlength=10).min() >= 34
    x2, *_ = load_dataset("digits", None, 0, 0.2)
    x3, *_ = load_dataset("digits", None, 1, 0.2)
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_normalize_per_channel():
    rng = np.random.default_rng(0)
    a = rng.normal([1.0, -2.0, 5.0], [1.0, 3.0, 0.5], (500, 4, 4, 3)).transpose(0, 3, 1, 2)
    xt, xs, mean, std = normalize(a, a[:10])
    assert np.allclose(mean, [1, -2, 5], atol=0.1) and np.allclose(std, [1, 3, 0.5], atol=0.1)
    m = xt.mean(dim=(0, 2, 3))
    s = xt.std(dim=(0, 2, 3))
    assert torch.allclose(m, torch.zeros(3), atol=1e-5) and torch.allclose(s, torch.ones(3), atol=1e-2)
    assert torch.allclose(xs, xt[:10])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_round_trip(tmp_path, gz, name):
    arrays = write_mnist(tmp_path, gz=gz)
    x, y, xt, yt, meta = load_dataset(name, str(tmp_path), 0, 0.2)
    assert x.shape == (30, 1, 28, 28) and xt.shape == (12, 1, 28, 28)
    assert torch.equal(y, torch.as_tensor(arrays["train-labels-idx1-ubyte"], dtype=torch.int64))
    assert torch.equal(yt, torch.as_tensor(arrays["t10k-labels-idx1-ubyte"], dtype=torch.int64))
    raw = arrays["train-images-idx3-ubyte"] / 255.0
    expect = (raw - raw.mean()) / raw.std()
    assert np.allclose(x[:, 0].numpy(), expect, atol=1e-5)
    raw_t = arrays["t10k-images-idx3-ubyte"] / 255.0
    assert np.allclose(xt[:, 0].numpy(), (raw_t - raw.mean()) / raw.std(), atol=1e-5)  # train statistics
    assert meta["num_classes"] == 10 and meta["input_shape"] == (1, 28, 28)


def test_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_mnist(raw, gz=True)
    assert load_dataset("mnist", tmp_path, 0, 0.2)[0].shape == (30, 1, 28, 28)


def test_mnist_missing(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path, 0, 0.2)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path) in msg and "train-images-idx3-ubyte" in msg
    assert "http" in msg and "\n" not in msg


def test_mnist_root_unset_or_absent(tmp_path):
    with pytest.raises(DataError, match="set data.root.*train-images-idx3-ubyte.*http"):
        load_dataset("mnist", None, 0, 0.2)
    with pytest.raises(DataError, match="not a directory.*fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path / "nope", 0, 0.2)


@pytest.mark.parametrize("corrupt", ["magic", "truncated", "gz"])
def test_mnist_malformed(tmp_path, corrupt):
    write_mnist(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    data = img.read_bytes()
    if corrupt == "magic":
        img.write_bytes(struct.pack(">i", 2049) + data[4:])
    elif corrupt == "truncated":
        img.write_bytes(data[:-100])
    else:
        img.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*not a valid IDX file") as e:
        load_dataset("mnist", tmp_path, 0, 0.2)
    assert "http" in str(e.value)


def test_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29)))
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", tmp_path, 0, 0.2)


def write_cifar10(root, py2_names=False):
    d = root / "cifar-10-batches-py"
    d.mkdir()
    batches = [write_cifar_batch(d / f"data_batch_{i}", 8, seed=i, py2_names=py2_names) for i in range(1, 6)]
    test = write_cifar_batch(d / "test_batch", 6, seed=9, py2_names=py2_names)
    return d, batches, test


@pytest.mark.parametrize("py2_names", [False, True])
def test_cifar10_round_trip(tmp_path, py2_names):
    _, batches, test = write_cifar10(tmp_path, py2_names)
    x, y, xt, yt, meta = load_dataset("cifar10", tmp_path, 0, 0.2)
    assert x.shape == (40, 3, 32, 32) and xt.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == sum((b[b"labels"] for b in batches), [])
    assert yt.tolist() == test[b"labels"]
    raw = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32) / 255.0
    mean, std = raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3))
    assert np.allclose(meta["mean"], mean) and np.allclose(meta["std"], std)
    assert np.allclose(x.numpy(), (raw - mean[:, None, None]) / std[:, None, None], atol=1e-5)
    assert meta["num_classes"] == 10 and meta["input_shape"] == (3, 32, 32)


def test_cifar100_round_trip(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    tr = write_cifar_batch(d / "train", 20, label_key=b"fine_labels", k=100)
    write_cifar_batch(d / "test", 5, label_key=b"fine_labels", k=100, seed=1)
    x, y, xt, yt, meta = load_dataset("cifar100", d, 0, 0.2)  # the folder itself works too
    assert x.shape == (20, 3, 32, 32) and xt.shape == (5, 3, 32, 32)
    assert y.tolist() == tr[b"fine_labels"] and meta["num_classes"] == 100


def test_cifar_missing(tmp_path):
    d, *_ = write_cifar10(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, 0, 0.2)
    msg = str(e.value)
    assert "data_batch_3 not found" in msg and "test_batch" in msg and "cs.toronto.edu" in msg


@pytest.mark.parametrize("bad", ["garbage", "keys", "shape", "code"])
def test_cifar_malformed(tmp_path, bad):
    d, *_ = write_cifar10(tmp_path)
    path = d / "test_batch"
    if bad == "garbage":
        path.write_bytes(b"\x00\x01 not a pickle")
    elif bad == "keys":
        path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    elif bad == "shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    else:  # a pickle that would run code is refused, not executed
        path.write_bytes(pickle.dumps(print))
    with pytest.raises(DataError, match="test_batch.*not a valid CIFAR python batch.*cs.toronto.edu"):
        load_dataset("cifar10", tmp_path, 0, 0.2)


def test_labels_out_of_range(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    write_cifar_batch(d / "train", 4, label_key=b"fine_labels", k=100)
    (d / "test").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [100]}))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 100\)"):
        load_dataset("cifar100", d, 0, 0.2)


def test_hf_without_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)
    with pytest.raises(DataError, match=r'pip install "dfl\[hf\]"'):
        load_dataset("hf:uoft-cs/cifar10", None, 0, 0.2)


@pytest.mark.parametrize("seed,fraction", [(0, 0.2), (1, 0.25), (7, 0.5), (3, 0.1)])
def test_digits_split_equals_scikit_learns(seed, fraction):
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    from dfl.data.datasets import load_digits

    x, y = sk_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=fraction, stratify=y, random_state=seed)
    got = load_digits(seed=seed, test_fraction=fraction)
    assert got[1].tolist() == y_tr.tolist() and got[3].tolist() == y_te.tolist()
    mean, std = got[4]["mean"], got[4]["std"]  # undo the per-channel normalisation
    restored = got[0].numpy().reshape(len(y_tr), -1) * np.asarray(std).reshape(-1)[0] + np.asarray(mean).reshape(-1)[0]
    np.testing.assert_allclose(restored, x_tr, atol=1e-5)


def test_digits_load_without_importing_scikit_learn():
    code = ("import sys; from dfl.data.datasets import load_digits; load_digits(); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"
