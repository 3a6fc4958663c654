"""dfl.rng: counter-based per-client streams; batches walk each shard epoch by epoch."""
import numpy as np

from dfl import rng


def test_batches_visit_every_sample_once_per_epoch():
    sizes = np.array([10, 7, 3])
    idx = rng.batch_indices(0, 2, np.array([0, 1, 2]), sizes, steps=5, batch=4)  # 20 draws each
    assert idx.shape == (3, 5, 4)
    for c, s in enumerate(sizes):
        walk = idx[c].reshape(-1)
        for start in range(0, len(walk) - s + 1, s):   # every full epoch is a permutation
            assert sorted(walk[start:start + s]) == list(range(s))
        assert walk.max() < s and walk.min() >= 0


def test_a_clients_batches_do_not_depend_on_the_other_clients_in_the_call():
    alone = rng.batch_indices(3, 1, np.array([7]), np.array([5]), 4, 3)
    together = rng.batch_indices(3, 1, np.array([2, 7, 9]), np.array([40, 5, 2]), 4, 3)
    assert (alone[0] == together[1]).all()


def test_batches_change_with_round_seed_and_client():
    base = rng.batch_indices(0, 0, np.array([1]), np.array([50]), 2, 8)
    for other in (rng.batch_indices(1, 0, np.array([1]), np.array([50]), 2, 8),
                  rng.batch_indices(0, 1, np.array([1]), np.array([50]), 2, 8),
                  rng.batch_indices(0, 0, np.array([2]), np.array([50]), 2, 8)):
        assert (base != other).any()
    assert (base == rng.batch_indices(0, 0, np.array([1]), np.array([50]), 2, 8)).all()


def test_participation_draws_exactly_the_fraction():
    for n, f in ((10, 0.5), (7, 0.3), (100, 0.1)):
        m = rng.participation(0, 3, n, f)
        assert m.sum() == max(1, round(f * n))
    assert rng.participation(0, 3, 5, 1.0).all()


def test_uniform_streams_are_in_range_and_differ_across_clients():
    u = rng.uniform(0, rng.BATCHES, 0, np.arange(4), 1000)
    assert u.shape == (4, 1000) and (u >= 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 0.02
    assert np.corrcoef(u[0], u[1])[0, 1] < 0.1
