"""Models: shapes, parameter counts, no buffers, functional_call and vmap over stacked clients."""
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from dfl.errors import ConfigError
from dfl.models import MODELS, build, num_params

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# parameter counts for 10 classes (the digits numbers are quoted in the README / report)
PARAMS = {
    ("logistic", (1, 8, 8)): 650, ("logistic", (1, 28, 28)): 7_850, ("logistic", (3, 32, 32)): 30_730,
    ("mlp", (1, 8, 8)): 55_210, ("mlp", (1, 28, 28)): 199_210, ("mlp", (3, 32, 32)): 656_810,
    ("cnn", (1, 8, 8)): 53_002, ("cnn", (1, 28, 28)): 421_642, ("cnn", (3, 32, 32)): 545_098,
    ("resnet18", (1, 8, 8)): 11_172_810, ("resnet18", (3, 32, 32)): 11_173_962,
}


def test_registry():
    assert MODELS.names() == ["cnn", "cnn1d", "logistic", "mixer", "mlp", "resnet18", "vgg11", "vit"]
    with pytest.raises(ConfigError, match="resnet18"):
        build("resnet-18", (3, 32, 32), 10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_forward_small(name, shape):
    torch.manual_seed(0)
    m = build(name, shape, 10)
    assert m(torch.randn(5, *shape)).shape == (5, 10)
    assert num_params(m) == PARAMS[(name, shape)]
    assert list(m.buffers()) == []


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_resnet18_forward(shape):
    m = build("resnet18", shape, 10)
    with torch.no_grad():
        assert m(torch.randn(2, *shape)).shape == (2, 10)
    assert num_params(m) == PARAMS[("resnet18", shape)]
    assert list(m.buffers()) == []
    assert not any(isinstance(x, torch.nn.modules.batchnorm._NormBase) for x in m.modules())
    assert any(isinstance(x, torch.nn.GroupNorm) and x.num_groups == 2 for x in m.modules())


def test_flat_inputs_and_options():
    assert build("logistic", (60,), 10)(torch.randn(3, 60)).shape == (3, 10)
    mlp = build("mlp", (60,), 10, hidden=16)
    assert mlp(torch.randn(3, 60)).shape == (3, 10) and num_params(mlp) == 60 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10
    assert num_params(build("cnn", (1, 8, 8), 10, hidden=16)) == 53_002  # ModelConfig keys pass through
    assert build("resnet18", (3, 8, 8), 5, groups=32)(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    with pytest.raises(ConfigError, match="unknown option"):
        build("cnn", (1, 8, 8), 10, depth=3)


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
@pytest.mark.parametrize("shape", [(60,), (8, 8)])
def test_bad_input_shape(name, shape):
    with pytest.raises(ConfigError, match=rf"'{name}'.*{shape}".replace("(", r"\(").replace(")", r"\)")):
        build(name, shape, 10)


@pytest.mark.parametrize("name,shape", [("logistic", (1, 8, 8)), ("mlp", (1, 28, 28)), ("cnn", (1, 8, 8)),
                                        ("cnn", (3, 32, 32)), ("resnet18", (1, 8, 8)),
                                        ("cnn1d", (40,)), ("mlp", (40,)), ("vgg11", (1, 8, 8))])
def test_functional_call_and_vmap_match_loop(name, shape):
    torch.manual_seed(0)
    models = [build(name, shape, 10) for _ in range(3)]
    params, buffers = stack_module_state(models)
    assert buffers == {}
    base = models[0]
    x = torch.randn(3, 2, *shape)  # per-client inputs

    def f(p, xb):
        return functional_call(base, p, (xb,))

    with torch.no_grad():
        batched = vmap(f)(params, x)
        loop = torch.stack([m(xi) for m, xi in zip(models, x)])
    assert batched.shape == (3, 2, 10)
    assert torch.allclose(batched, loop, atol=1e-6)
    if name == "resnet18":  # its backward takes seconds on CPU; forward is the check that matters
        return
    # gradients through vmap(grad) match too
    y = torch.randint(0, 10, (3, 2))

    def loss(p, xb, yb):
        return torch.nn.functional.cross_entropy(f(p, xb), yb)

    grads = vmap(torch.func.grad(loss))(params, x, y)
    for i, m in enumerate(models):
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(x[i]), y[i]).backward()
        for k, p in m.named_parameters():
            assert torch.allclose(grads[k][i], p.grad, atol=1e-6), k
