"""data.augment = crop_flip: the transform by hand, per-client streams, vectorized == serial."""
import types

import numpy as np
import pytest
import torch

from dfl import rng
from dfl.config import DataConfig
from dfl.data import load_federated
from dfl.data.augment import crop_flip, crop_flip_draws
from dfl.engines import ClientData
from dfl.errors import ConfigError
from dfl.flower.local import OneClientData, shard_of
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_same_history


def test_crop_flip_by_hand():
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]], padded by 1 with zeros
    cases = {
        (1, 1, 0): [[1, 2, 3], [4, 5, 6], [7, 8, 9]],  # crop at (pad, pad), no flip: the image
        (1, 1, 1): [[3, 2, 1], [6, 5, 4], [9, 8, 7]],  # the mirror image
        (0, 0, 0): [[0, 0, 0], [0, 1, 2], [0, 4, 5]],  # top-left corner of the padded image
        (2, 1, 0): [[4, 5, 6], [7, 8, 9], [0, 0, 0]],  # shifted up
        (2, 0, 1): [[5, 4, 0], [8, 7, 0], [0, 0, 0]],  # bottom-left corner, then flipped
    }
    for draw, want in cases.items():
        got = crop_flip(x, torch.tensor([draw]), pad=1)
        assert got.tolist() == [[want]], draw


def test_crop_flip_per_sample_and_channel_and_lead_dims():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 6, 7)  # (clients, B, C, H, W)
    draws = torch.stack([torch.randint(0, 9, (2, 5)), torch.randint(0, 9, (2, 5)), torch.randint(0, 2, (2, 5))], -1)
    got = crop_flip(x, draws, pad=4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        for b in range(5):
            dy, dx, flip = draws[i, b].tolist()
            want = padded[i, b, :, dy:dy + 6, dx:dx + 7]
            assert torch.equal(got[i, b], want.flip(-1) if flip else want)


def test_crop_flip_draws():
    u = np.array([[0.0, 0.0, 0.0], [0.999999, 0.5, 0.5], [1 / 9, 8 / 9 - 1e-9, 0.49]])
    assert crop_flip_draws(u).tolist() == [[0, 0, 1], [8, 4, 0], [1, 7, 1]]
    d = crop_flip_draws(rng.augment_uniforms(0, 0, np.arange(50), 0, 200, 3))
    assert d.shape == (50, 200, 3)
    counts = np.bincount(d[..., 0].ravel(), minlength=9)
    assert len(counts) == 9 and counts.min() > 0.9 * 10_000 / 9  # offsets 0..8, about uniform
    assert abs(d[..., 2].mean() - 0.5) < 0.02


@pytest.fixture(scope="module")
def fed():
    return load_federated(DataConfig(num_clients=6), 0)


def test_same_batch_whatever_else_is_in_the_call(fed):
    full = ClientData(fed, torch.device("cpu"), 3, 8, augment="crop_flip")
    clients = np.arange(6)
    _, glob = full.batches(clients, 2, 4)
    xs = full.inputs(glob[:, 1], clients, 2, 1)
    assert xs.shape == (6, 8, 1, 8, 8)
    assert not torch.equal(xs, full.x[glob[:, 1]])  # it does augment
    # a subset of rows, in another order
    sub = np.array([4, 1])
    assert torch.equal(full.inputs(glob[sub, 1], sub, 2, 1), xs[sub])
    # a Ray actor's ClientData: clients 3..5 under their global ids
    block = types.SimpleNamespace(x_train=fed.x_train, y_train=fed.y_train, client_train=fed.client_train[3:],
                                  num_classes=fed.num_classes)
    actor = ClientData(block, torch.device("cpu"), 3, 8, client_ids=np.arange(3, 6), augment="crop_flip")
    _, glob_a = actor.batches(np.arange(3), 2, 4)
    assert torch.equal(glob_a, glob[3:])
    assert torch.equal(actor.inputs(glob_a[:, 1], np.arange(3), 2, 1), xs[3:])
    # Flower's one-client data of client 5 (its pool is the shard, so compare the inputs)
    one = OneClientData(shard_of(fed, 5), torch.device("cpu"), 3, 8, augment="crop_flip")
    _, glob_1 = one.batches(np.array([0]), 2, 4)
    assert torch.equal(one.inputs(glob_1[:, 1], np.array([0]), 2, 1), xs[5:])
    # another step, round or seed: other draws
    assert not torch.equal(full.inputs(glob[:, 1], clients, 2, 2), xs)
    assert not torch.equal(full.inputs(glob[:, 1], clients, 3, 1), xs)


def test_none_is_the_plain_inputs(fed):
    data = ClientData(fed, torch.device("cpu"), 3, 8)
    _, glob = data.batches(np.arange(6), 0, 2)
    assert torch.equal(data.inputs(glob[:, 0], np.arange(6), 0, 0), data.x[glob[:, 0]])


def test_non_image_data_is_a_one_line_error():
    flat = types.SimpleNamespace(x_train=torch.zeros(10, 40), y_train=torch.zeros(10, dtype=torch.int64),
                                 client_train=[torch.arange(10)], num_classes=10)
    with pytest.raises(ConfigError, match=r"^data.augment: must be 'none' for non-image inputs .*"
                                          r"got 'crop_flip' with input shape \(40,\)$"):
        ClientData(flat, torch.device("cpu"), 0, 4, augment="crop_flip")
    with pytest.raises(ConfigError, match="data.augment"):
        Simulation(small_config(**{"data.name": "synthetic", "data.augment": "crop_flip"}))


def test_vectorized_equals_serial_with_crop_flip():
    common = {"model.name": "cnn", "data.augment": "crop_flip", "algorithm.name": "dfedsam",
              "local.optimizer": "sam", "local.momentum": 0.5, "rounds": 2}
    v = Simulation(small_config(**common, **{"engine.backend": "vectorized"})).run()
    s = Simulation(small_config(**common, **{"engine.backend": "serial"})).run()
    plain = Simulation(small_config(**{**common, "data.augment": "none"})).run()
    assert_same_history(v, s, tol=1e-6, keys=("test_acc", "test_loss", "train_loss", "consensus"))
    assert v[-1]["train_loss"] != pytest.approx(plain[-1]["train_loss"], rel=1e-6)  # augmentation is on
