"""load_federated and the per-client held-out split."""
import numpy as np
import pytest
import torch

from dfl.config import DataConfig
from dfl.data import FederatedData, holdout_split, load_federated
from dfl.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def fed():
    return load_federated(DataConfig(num_clients=8, alpha=0.5, holdout_fraction=0.2), 3)


def test_fields(fed):
    assert isinstance(fed, FederatedData) and fed.name == "digits"
    assert fed.input_shape == (1, 8, 8) and fed.num_classes == 10
    assert fed.x_train.shape == (1437, 1, 8, 8) and fed.x_test.shape == (360, 1, 8, 8)
    assert len(fed.client_train) == len(fed.client_test) == 8
    assert all(t.dtype == torch.int64 for t in fed.client_train + fed.client_test)


def test_client_splits_disjoint_cover(fed):
    everything = torch.cat(fed.client_train + fed.client_test).numpy()
    assert np.array_equal(np.sort(everything), np.arange(len(fed.y_train)))
    for tr, te in zip(fed.client_train, fed.client_test):
        assert len(tr) >= 1 and len(te) >= 1
        assert 0.1 < len(te) / (len(tr) + len(te)) < 0.3


def test_sizes_and_label_counts(fed):
    counts = fed.label_counts()
    assert counts.shape == (8, 10) and counts.dtype == np.int64
    assert counts.sum(axis=1).tolist() == fed.sizes()
    i = 2
    assert counts[i].tolist() == torch.bincount(fed.y_train[fed.client_train[i]], minlength=10).tolist()


def test_deterministic(fed):
    again = load_federated(DataConfig(num_clients=8, alpha=0.5, holdout_fraction=0.2), 3)
    assert all(torch.equal(a, b) for a, b in zip(fed.client_train, again.client_train))
    other = load_federated(DataConfig(num_clients=8, alpha=0.5, holdout_fraction=0.2), 4)
    assert any(not torch.equal(a, b) for a, b in zip(fed.client_train, other.client_train))


def test_holdout_split_edges():
    parts = [np.arange(0, 1), np.arange(1, 3), np.arange(3, 13)]
    tr, te = holdout_split(parts, 0.0, 0)
    assert [len(t) for t in te] == [0, 0, 0] and [len(t) for t in tr] == [1, 2, 10]
    tr, te = holdout_split(parts, 0.9, 0)
    assert [len(t) for t in tr] == [1, 1, 1] and [len(t) for t in te] == [0, 1, 9]
    tr, te = holdout_split(parts, 0.01, 0)
    assert [len(t) for t in te] == [0, 1, 1]


@pytest.mark.parametrize("scheme", ["iid", "shards", "quantity"])
def test_schemes_from_config(scheme):
    fed = load_federated(DataConfig(num_clients=5, partition=scheme, shards_per_client=2, holdout_fraction=0.0), 0)
    assert sum(fed.sizes()) == 1437
    if scheme == "shards":
        assert ((fed.label_counts() > 0).sum(axis=1) <= 2).all()


def test_errors():
    with pytest.raises(ConfigError, match="partition"):
        load_federated(DataConfig(partition="pathological"), 0)
    with pytest.raises(DataError, match="2000 clients but only 1437 samples"):
        load_federated(DataConfig(num_clients=2000, partition="iid"), 0)
