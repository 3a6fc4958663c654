"""MNIST-1D: generated offline by the mnist1d package, cached in-process and on disk."""
import argparse
import random
import socket

import numpy as np
import pytest
import torch

from dfl.commands import data as data_cmd
from dfl.config import DataConfig
from dfl.data import load_dataset, load_federated
from dfl.data.datasets import mnist1d


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty on-disk cache and no in-process copy: the next load generates."""
    monkeypatch.setenv("DFL_CACHE_DIR", str(tmp_path))
    mnist1d.mnist1d_arrays.cache_clear()
    yield tmp_path
    mnist1d.mnist1d_arrays.cache_clear()


def no_network(*args, **kwargs):
    raise AssertionError("mnist1d must not touch the network")


def test_shapes_dtypes_classes_and_normalisation():
    x, y, xt, yt, meta = load_dataset("mnist1d", None, 0, 0.2)
    assert x.shape == (4000, 40) and xt.shape == (1000, 40)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and yt.dtype == torch.int64
    assert meta["input_shape"] == (40,) and meta["num_classes"] == 10 and meta["source"] == "mnist1d"
    assert set(y.tolist()) == set(range(10)) and set(yt.tolist()) == set(range(10))
    # one channel: the training set's mean and std over all positions, so mean 0 and std 1 overall
    assert len(meta["mean"]) == 1 and len(meta["std"]) == 1
    assert abs(float(x.double().mean())) < 1e-6 and float(x.double().std()) == pytest.approx(1.0, abs=1e-3)


def test_fixed_data_whatever_the_seed_and_loads_equal():
    a = load_dataset("mnist1d", None, 0, 0.2)
    b = load_dataset("mnist1d", None, 5, 0.5)  # the data set is fixed: seed and test_fraction do not change it
    for u, v in zip(a[:4], b[:4]):
        assert torch.equal(u, v)
    a[1][:] = -1  # a caller's in-place change does not reach the process cache
    assert torch.equal(load_dataset("mnist1d", None, 0, 0.2)[1], b[1])


def test_generated_offline_cached_on_disk_and_global_rng_untouched(fresh_cache, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    np.random.seed(123)
    random.seed(123)
    want_np, want_py = np.random.get_state()[1].copy(), random.getstate()
    x, y, xt, yt, _ = load_dataset("mnist1d", None, 0, 0.2)
    assert np.array_equal(np.random.get_state()[1], want_np) and random.getstate() == want_py
    files = list(fresh_cache.glob("mnist1d-*.npz"))
    assert len(files) == 1 and not list(fresh_cache.glob("*.tmp"))  # written atomically, no leftovers

    # a second process (no in-process copy) reads the file and never generates
    mnist1d.mnist1d_arrays.cache_clear()
    monkeypatch.setattr(mnist1d, "_generate_mnist1d", no_network)
    x2, y2, xt2, yt2, _ = load_dataset("mnist1d", None, 0, 0.2)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(xt, xt2) and torch.equal(yt, yt2)


def test_corrupt_or_unwritable_cache_regenerates(fresh_cache, monkeypatch):
    fake = {"x": np.zeros((20, 40)), "y": np.arange(20) % 10, "x_test": np.ones((10, 40)), "y_test": np.arange(10)}
    calls = []
    monkeypatch.setattr(mnist1d, "_generate_mnist1d", lambda: calls.append(1) or fake)
    from importlib import metadata
    (fresh_cache / f"mnist1d-{metadata.version('mnist1d')}.npz").write_bytes(b"not a zip")
    x, *_ = load_dataset("mnist1d", None, 0, 0.2)
    assert calls == [1] and x.shape == (20, 40)
    mnist1d.mnist1d_arrays.cache_clear()
    load_dataset("mnist1d", None, 0, 0.2)
    assert calls == [1]  # the corrupt file was replaced by a good one

    mnist1d.mnist1d_arrays.cache_clear()
    monkeypatch.setenv("DFL_CACHE_DIR", str(fresh_cache / "file"))
    (fresh_cache / "file").write_text("a file where the cache directory should be")
    x, *_ = load_dataset("mnist1d", None, 0, 0.2)  # cannot write: still loads
    assert calls == [1, 1] and x.shape == (20, 40)


def test_federated_split_and_data_command(tmp_path, capsys):
    fed = load_federated(DataConfig(name="mnist1d", num_clients=8, partition="dirichlet_prior", alpha=0.3), 0)
    assert fed.input_shape == (40,) and fed.num_classes == 10
    assert {len(tr) + len(te) for tr, te in zip(fed.client_train, fed.client_test)} == {500}
    path = tmp_path / "exp.toml"
    path.write_text('[data]\nname = "mnist1d"\nnum_clients = 7\npartition = "dirichlet_prior"\nalpha = 0.3\n')
    p = argparse.ArgumentParser()
    data_cmd.add_parser(p.add_subparsers(dest="command"))
    assert data_cmd.run(p.parse_args(["data", str(path)])) == 0
    out = capsys.readouterr().out
    assert "mnist1d: 7 clients, partition dirichlet_prior, input (40,)" in out and "4000 train" in out
    assert "3 training samples in no client's shard" in out  # 4000 = 7 * 571 + 3
