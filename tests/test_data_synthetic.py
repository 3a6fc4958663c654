"""FedProx synthetic(alpha, beta): determinism, shapes, heterogeneity."""
import numpy as np
import torch

from dfl.config import DataConfig
from dfl.data import load_dataset, load_federated


def synth(alpha, beta, seed=0, clients=40, **kw):
    return load_dataset("synthetic", None, seed, 0.2, num_clients=clients, alpha=alpha, beta=beta, **kw)


def mean_label_entropy(y, parts):
    ent = []
    for p in parts:
        c = np.bincount(y[p], minlength=10) / len(p)
        c = c[c > 0]
        ent.append(-(c * np.log(c)).sum())
    return float(np.mean(ent))


def test_shapes_and_natural_partition():
    x, y, xt, yt, meta = synth(1, 1, clients=7, dim=30, samples=50)
    assert x.shape[1] == 30 and x.dtype == torch.float32 and y.dtype == torch.int64
    assert meta["input_shape"] == (30,) and meta["num_classes"] == 10
    parts = meta["partition"]
    assert len(parts) == 7
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(len(y)))
    assert len(xt) > 0 and 0.1 < len(xt) / (len(x) + len(xt)) < 0.3
    assert int(y.max()) < 10 and int(y.min()) >= 0


def test_deterministic_per_seed():
    a, b, c = synth(0.5, 0.5, 3), synth(0.5, 0.5, 3), synth(0.5, 0.5, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0][:10], c[0][:10])


def test_sizes_lognormal_around_samples():
    sizes = [len(p) for p in synth(0, 0, clients=200, samples=100)[4]["partition"]]
    total = np.array(sizes) / 0.8  # train parts are ~80%
    assert 80 < total.mean() < 120 and total.std() > 20 and min(sizes) >= 7


def test_heterogeneity_grows_with_alpha_beta():
    # clients' label distributions concentrate (lower entropy) as beta moves their inputs apart
    ent = []
    for a, b in ((0, 0), (1, 1), (2, 2)):
        ent.append(np.mean([mean_label_entropy(d[1].numpy(), d[4]["partition"])
                            for d in (synth(a, b, s) for s in range(3))]))
    assert ent[0] > ent[1] > ent[2]


def test_alpha_shifts_every_class_alike():
    # documented property of the FedProx generator: u_k adds the same amount to every class score
    assert torch.equal(synth(0, 1)[1], synth(2, 1)[1])


def test_load_federated_synthetic():
    cfg = DataConfig(name="synthetic", num_clients=6, synthetic_samples=40, synthetic_dim=20, partition="shards")
    fed = load_federated(cfg, 0)
    assert fed.input_shape == (20,) and fed.num_classes == 10 and len(fed.client_train) == 6
    assert sum(fed.sizes()) + sum(len(t) for t in fed.client_test) == len(fed.y_train)
