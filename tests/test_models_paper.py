"""The models of the paper setups: vgg11 (GroupNorm, DisPFL / DFedSAM), cnn1d (MNIST-1D's
ConvBase), and flat models on MNIST-1D's (40,) inputs; hand parameter counts (vmap == loop: tests/test_models.py)."""
import pytest
import torch

from dfl.errors import ConfigError
from dfl.models import build, num_params


def conv(c_in, c_out, k):
    """Parameters of a convolution with bias: c_out * c_in * k + c_out (k = kernel elements)."""
    return c_out * c_in * k + c_out


def test_cnn1d_shapes_and_hand_count():
    m = build("cnn1d", (40,), 10)
    assert m(torch.randn(3, 40)).shape == (3, 10)
    # lengths 40 -> 19 -> 10 -> 5: floor((L + 2 - k) / 2) + 1 with k = 5, 3, 3
    assert num_params(m) == conv(1, 25, 5) + conv(25, 25, 3) + conv(25, 25, 3) + (25 * 5 * 10 + 10) == 5_210
    assert list(m.buffers()) == []
    two = build("cnn1d", (2, 40), 10)  # (channels, length) works too
    assert two(torch.randn(3, 2, 40)).shape == (3, 10) and num_params(two) == 5_210 + 25 * 5


@pytest.mark.parametrize("shape", [(1, 8, 8), (2,), (3, 4, 5, 6)])
def test_cnn1d_needs_sequences(shape):
    with pytest.raises(ConfigError, match=r"model 'cnn1d' needs sequence inputs"):
        build("cnn1d", shape, 10)


def test_flat_models_fit_mnist1d_inputs():
    assert num_params(build("logistic", (40,), 10)) == 40 * 10 + 10
    mlp = build("mlp", (40,), 10, hidden=100)
    assert mlp(torch.randn(2, 40)).shape == (2, 10)
    assert num_params(mlp) == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10


def vgg11_count(c_in, h, w, k=10):
    """[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]: conv3x3 + GroupNorm (2 c) per number."""
    widths = [64, 128, 256, 256, 512, 512, 512, 512]
    total, c = 0, c_in
    for v in widths:
        total += conv(c, v, 9) + 2 * v
        c = v
    for _ in range(5):  # a pool only where the map is >= 2 wide
        if min(h, w) >= 2:
            h, w = h // 2, w // 2
    return total + 512 * h * w * k + k


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (1, 28, 28), (3, 64, 64)])
def test_vgg11_shapes_and_hand_count(shape):
    torch.manual_seed(0)
    m = build("vgg11", shape, 10)
    assert num_params(m) == vgg11_count(*shape)
    with torch.no_grad():
        assert m(torch.randn(2, *shape)).shape == (2, 10)
    assert list(m.buffers()) == []
    norms = [x for x in m.modules() if isinstance(x, torch.nn.GroupNorm)]
    assert len(norms) == 8 and all(x.num_groups == 32 for x in norms)  # the DisPFL / DFedSAM default
    assert not any(isinstance(x, torch.nn.modules.batchnorm._NormBase) for x in m.modules())
    assert vgg11_count(3, 32, 32) == 9_231_114  # the CIFAR-10 model: a 512 -> 10 head


def test_vgg11_reference_init():
    torch.manual_seed(0)
    m = build("vgg11", (3, 32, 32), 10, groups=8)
    assert all(x.num_groups == 8 for x in m.modules() if isinstance(x, torch.nn.GroupNorm))
    head = m.classifier
    assert torch.all(head.bias == 0) and float(head.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    first = m.features[0]
    assert torch.all(first.bias == 0)  # kaiming fan_out: std = sqrt(2 / (64 * 9))
    assert float(first.weight.detach().std()) == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.15)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
@pytest.mark.parametrize("groups", [0, 3, 48])
def test_groups_must_divide_the_channels(name, groups):
    with pytest.raises(ConfigError, match=rf"^model.groups: must divide 64 \(the channels of every GroupNorm "
                                          rf"of {name}\), got {groups}$"):
        build(name, (3, 32, 32), 10, groups=groups)



def test_cnn1d_on_mnist1d_vectorized_equals_serial():
    from dfl.simulation import Simulation
    from tests.conftest import small_config
    from tests.helpers import assert_same_history

    common = {"data.name": "mnist1d", "data.partition": "dirichlet_prior", "data.alpha": 0.3,
              "model.name": "cnn1d", "algorithm.name": "dfedsam", "rounds": 2}
    v = Simulation(small_config(**common)).run()
    s = Simulation(small_config(**common, **{"engine.backend": "serial"})).run()
    assert_same_history(v, s, tol=1e-6, keys=("test_acc", "test_loss", "train_loss", "consensus"))
