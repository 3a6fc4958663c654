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
    assert PARTITIONERS.names() == ["dirichlet", "dirichlet_prior", "iid", "quantity", "shards"]
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


# ---------------------------------------------------------------------------- dirichlet_prior

def max_class_share(y, parts, k=10):
    """Mean over clients of the largest class's share of the client's samples."""
    return float(np.mean([np.bincount(y[p], minlength=k).max() / len(p) for p in parts]))


def dispfl_dir(y, n_client, alpha, rs, n_cls=10):
    """rong-dai/DisPFL's partition_data(..., 'dir') loop, transcribed (legacy np.random)."""
    left = np.full(n_client, len(y) // n_client)
    cum = np.cumsum(rs.dirichlet([alpha] * n_cls, size=n_client), axis=1)
    idx_list = [np.where(y == i)[0] for i in range(n_cls)]
    amount = [len(i) for i in idx_list]
    parts = [[] for _ in range(n_client)]
    while left.sum():
        c = rs.randint(n_client)
        if left[c] <= 0:
            continue
        left[c] -= 1
        while True:
            cls = int(np.argmax(rs.uniform() <= cum[c]))
            if amount[cls] <= 0:  # class exhausted: redraw
                continue
            amount[cls] -= 1
            parts[c].append(idx_list[cls][amount[cls]])
            break
    return [np.asarray(p) for p in parts]


@pytest.mark.parametrize("n,clients", [(2000, 20), (2003, 7)])
def test_dirichlet_prior_equal_disjoint_deterministic(n, clients):
    y = labels(n)
    parts = partition(y, clients, "dirichlet_prior", 4, alpha=0.3)
    assert [len(p) for p in parts] == [n // clients] * clients  # the remainder goes to nobody
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx) == clients * (n // clients)
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    again = partition(y, clients, "dirichlet_prior", 4, alpha=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition(y, clients, "dirichlet_prior", 5, alpha=0.3)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_dirichlet_prior_skew_follows_alpha():
    y = labels(5000)
    share = {a: max_class_share(y, partition(y, 20, "dirichlet_prior", 0, alpha=a)) for a in (0.1, 1.0, 100.0)}
    assert share[0.1] > 0.55 > share[1.0] > share[100.0]
    assert share[100.0] < 0.2  # near the uniform 0.1 (plus multinomial noise on 250 samples)


def test_dirichlet_prior_statistics_match_dispfl():
    y = labels(4000)
    ours, ref = [], []
    for seed in range(10):
        for out, parts in ((ours, partition(y, 20, "dirichlet_prior", seed, alpha=1.0)),
                           (ref, dispfl_dir(y, 20, 1.0, np.random.RandomState(seed)))):
            present = np.mean([len(np.unique(y[p])) for p in parts])
            out.append((max_class_share(y, parts), present))
    (share, present), (share_ref, present_ref) = np.mean(ours, 0), np.mean(ref, 0)
    assert share == pytest.approx(share_ref, abs=0.025)
    assert present == pytest.approx(present_ref, abs=0.25)


def test_dirichlet_prior_scarce_class_and_underflowing_priors():
    # class 0 has 3 samples: once it runs out, every prior is renormalised over classes 1..9
    y = np.concatenate([np.zeros(3, int), labels(997, k=9) + 1])
    parts = partition(y, 10, "dirichlet_prior", 0, alpha=0.5)
    assert {len(p) for p in parts} == {100}
    assert len(np.unique(np.concatenate(parts))) == 1000  # all dealt, nothing twice
    # at alpha = 1e-4 the priors underflow to exact zeros on most classes: it still terminates
    parts = partition(labels(), 10, "dirichlet_prior", 0, alpha=1e-4)
    assert {len(p) for p in parts} == {200}
    assert max_class_share(labels(), parts) > 0.5


def test_dirichlet_prior_bad_alpha():
    with pytest.raises(DataError, match=r"alpha must be > 0, got 0"):
        partition(labels(), 4, "dirichlet_prior", 0, alpha=0.0)
