"""Partitioners: coverage, sizes, skew statistics, determinism."""
import numpy as np
import pytest

from dfl.data import PARTITIONERS, partition
from dfl.errors import ConfigError, DataError


def labels(n=2000, k=10, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def mean_label_entropy(y, parts, k=10):
    ent = []
    for p in parts:
        c = np.bincount(y[p], minlength=k) / len(p)
        c = c[c > 0]
        ent.append(-(c * np.log(c)).sum())
    return float(np.mean(ent))


def check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and covering
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


def test_registry_names():
    assert PARTITIONERS.names() == ["dirichlet", "iid", "quantity", "shards"]
    with pytest.raises(ConfigError, match="dirichlet"):
        partition(labels(), 4, "dirichlett", 0)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards", "quantity"])
def test_cover_nonempty_deterministic(scheme):
    y = labels()
    opts = dict(alpha=0.5, min_size=10, shards_per_client=2, sigma=1.0)
    parts = partition(y, 20, scheme, 7, **opts)
    assert len(parts) == 20
    check_cover(parts, len(y))
    assert min(len(p) for p in parts) >= 1
    again = partition(y, 20, scheme, 7, **opts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition(y, 20, scheme, 8, **opts)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_sizes_balanced():
    parts = partition(labels(1003), 10, "iid", 0)
    assert {len(p) for p in parts} == {100, 101}


def test_dirichlet_skew_grows_as_alpha_falls():
    y = labels(5000)
    ent = [mean_label_entropy(y, partition(y, 20, "dirichlet", 0, alpha=a, min_size=5)) for a in (100, 1, 0.1)]
    assert ent[0] > ent[1] > ent[2]
    assert ent[0] > 0.95 * np.log(10)  # near uniform labels at alpha=100
    assert ent[2] < 0.6 * np.log(10)


@pytest.mark.parametrize("alpha,clients", [(0.1, 10), (0.3, 30)])
def test_dirichlet_min_size(alpha, clients):
    y = labels()
    parts = partition(y, clients, "dirichlet", 3, alpha=alpha, min_size=15)
    assert min(len(p) for p in parts) >= 15
    check_cover(parts, len(y))


def test_dirichlet_gives_up_with_numbers():
    # at alpha=0.01 each class lands on ~one client: 30 clients cannot all get 15 samples
    with pytest.raises(DataError, match=r"30 clients >= min_size 15 of 2000 samples at alpha=0.01"):
        partition(labels(), 30, "dirichlet", 0, alpha=0.01, min_size=15)


def test_dirichlet_impossible_min_size():
    with pytest.raises(DataError, match=r"50 clients x min_size 50 = 2500 > 2000"):
        partition(labels(), 50, "dirichlet", 0, alpha=0.5, min_size=50)


def test_more_clients_than_samples():
    with pytest.raises(DataError, match=r"11 clients but only 10 samples"):
        partition(labels(10), 11, "iid", 0)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_shards_classes_per_client(s):
    y = labels(3000)
    parts = partition(y, 20, "shards", 1, shards_per_client=s)
    check_cover(parts, len(y))
    assert max(len(np.unique(y[p])) for p in parts) <= s
    if s == 1:
        assert all(len(np.unique(y[p])) == 1 for p in parts)


def test_shards_unbalanced_classes():
    y = np.concatenate([np.zeros(900, int), np.ones(80, int), np.full(20, 2)])
    parts = partition(y, 10, "shards", 0, shards_per_client=2)
    check_cover(parts, len(y))
    assert max(len(np.unique(y[p])) for p in parts) <= 2


def test_shards_too_few_shards_for_classes():
    with pytest.raises(DataError, match=r"4 clients x 2 shards = 8 < 10 classes"):
        partition(labels(), 4, "shards", 0, shards_per_client=2)


def test_quantity_sizes_vary_with_sigma():
    y = labels(5000)
    cv = []
    for sigma in (0.0, 0.5, 2.0):
        sizes = np.array([len(p) for p in partition(y, 30, "quantity", 0, sigma=sigma, min_size=5)])
        assert sizes.min() >= 5 and sizes.sum() == 5000
        cv.append(sizes.std() / sizes.mean())
    assert cv[0] < 0.01 < cv[1] < cv[2]


def test_quantity_labels_iid():
    y = labels(20000)
    parts = partition(y, 5, "quantity", 0, sigma=0.3, min_size=10)
    assert mean_label_entropy(y, parts) > 0.99 * np.log(10)


def test_unknown_option():
    with pytest.raises(ConfigError, match="unknown option"):
        partition(labels(), 4, "iid", 0, alfa=1.0)
