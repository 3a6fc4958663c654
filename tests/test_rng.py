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


def test_batch_indices_stay_in_range_for_any_shard_and_batch():
    sizes = np.array([1, 2, 5, 16, 17, 100])
    for steps, batch in ((1, 1), (3, 16), (7, 40), (2, 100)):
        idx = rng.batch_indices(5, 4, np.arange(6), sizes, steps, batch)
        assert idx.shape == (6, steps, batch) and idx.dtype.kind == "i"
        assert (idx >= 0).all() and (idx < sizes[:, None, None]).all()
    one = rng.batch_indices(0, 0, np.array([3]), np.array([1]), 4, 5)
    assert (one == 0).all()  # a shard of one sample: every draw is that sample


def test_batches_walk_on_across_steps_not_restart_each_step():
    # steps * batch draws are consecutive positions of the walk: the same round, asked for more
    # steps, starts with the same batches, and with batch 1 the first `size` draws are a permutation
    a = rng.batch_indices(0, 2, np.array([4]), np.array([30]), 2, 5)
    b = rng.batch_indices(0, 2, np.array([4]), np.array([30]), 6, 5)
    assert (a[0] == b[0, :2]).all()
    walk = rng.batch_indices(0, 2, np.array([4]), np.array([30]), 30, 1).reshape(-1)
    assert sorted(walk) == list(range(30)) and not (walk == np.arange(30)).all()


def test_epochs_are_fresh_permutations():
    walk = rng.batch_indices(1, 0, np.array([0]), np.array([20]), 10, 8).reshape(-1)   # 4 epochs of 20
    epochs = walk.reshape(4, 20)
    assert all(sorted(e) == list(range(20)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4


def test_streams_of_different_clients_and_uses_are_independent():
    u = rng.uniform(0, rng.BATCHES, 0, np.arange(8), 4000)
    c = np.corrcoef(u)
    assert np.abs(c[~np.eye(8, dtype=bool)]).max() < 0.06
    # the named streams never share draws for the same (seed, round, client)
    streams = [rng.uniform(0, s, 0, np.array([1]), 2000)[0]
               for s in (rng.BATCHES, rng.PARTICIPATION, rng.FAULTS, rng.EVAL, rng.AUGMENT, rng.COMPRESS)]
    assert len({tuple(s[:4]) for s in streams}) == len(streams)
    assert np.abs(np.corrcoef(streams)[~np.eye(len(streams), dtype=bool)]).max() < 0.08
    # uniform on [0, 1): mean 1/2, variance 1/12, each decile ~10%
    flat = u.reshape(-1)
    assert abs(flat.mean() - 0.5) < 0.01 and abs(flat.var() - 1 / 12) < 0.003
    assert np.abs(np.histogram(flat, bins=10, range=(0, 1))[0] / flat.size - 0.1).max() < 0.01


def test_a_clients_uniforms_do_not_depend_on_the_others_asked():
    alone = rng.uniform(2, rng.FAULTS, 7, np.array([5]), 10)
    together = rng.uniform(2, rng.FAULTS, 7, np.array([9, 5, 0]), 10)
    assert (alone[0] == together[1]).all()


def test_participation_counts_are_exact_for_every_fraction():
    for n in (1, 2, 3, 6, 10, 33, 1000):
        for f in (1e-6, 0.1, 0.25, 0.34, 0.5, 0.75, 0.999, 1.0):
            for t in range(3):
                m = rng.participation(0, t, n, f)
                assert m.dtype == bool and m.shape == (n,)
                assert m.sum() == (n if f >= 1.0 else max(1, int(round(f * n)))), (n, f, t)


def test_participation_is_fair_over_rounds_and_changes_each_round():
    masks = np.array([rng.participation(3, t, 20, 0.25) for t in range(400)])
    share = masks.mean(0)
    assert np.abs(share - 0.25).max() < 0.08     # every client is drawn ~ a quarter of the rounds
    assert len({tuple(m) for m in masks[:20]}) > 15
    assert (rng.participation(3, 5, 20, 0.25) == masks[5]).all()   # deterministic


def test_augment_uniforms_range_shape_and_independence():
    u = rng.augment_uniforms(0, 1, np.array([0, 1, 2]), step=2, batch=8, fields=3)
    assert u.shape == (3, 8, 3) and (u >= 0).all() and (u < 1).all()
    alone = rng.augment_uniforms(0, 1, np.array([1]), step=2, batch=8, fields=3)
    assert (alone[0] == u[1]).all()
    assert not (u[0] == u[1]).any()
    assert not (rng.augment_uniforms(0, 1, np.array([1]), step=3, batch=8, fields=3) == alone).any()
