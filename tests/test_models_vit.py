"""Models vit and mixer: shapes, parameter counts, patch sizes, no buffers or BatchNorm,
functional_call + vmap over 3 stacked clients == per-client loop (outputs and gradients)."""
import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from dfl.errors import ConfigError
from dfl.models import MODELS, build, num_params
from dfl.models.vit import patch_size
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_same_history

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
PARAMS = {
    ("vit", (1, 8, 8)): 69_066, ("vit", (1, 28, 28)): 71_946, ("vit", (3, 32, 32)): 74_954,
    ("mixer", (1, 8, 8)): 72_714, ("mixer", (1, 28, 28)): 82_062, ("mixer", (3, 32, 32)): 88_010,
}


def test_registered_and_patch_sizes():
    assert {"vit", "mixer"} <= set(MODELS.names())
    assert [patch_size("vit", s, s) for s in (8, 28, 32)] == [2, 4, 4]
    with pytest.raises(ConfigError, match="11x13"):
        build("vit", (1, 11, 13), 10)
    with pytest.raises(ConfigError, match="image inputs"):
        build("mixer", (60,), 10)
    with pytest.raises(ConfigError, match="depth"):
        build("vit", (1, 8, 8), 10, depth=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["vit", "mixer"])
def test_forward_counts_and_no_buffers(name, shape):
    torch.manual_seed(0)
    m = build(name, shape, 10)
    assert m(torch.randn(5, *shape)).shape == (5, 10)
    assert num_params(m) == PARAMS[(name, shape)]
    assert list(m.buffers()) == []
    assert not any(isinstance(x, torch.nn.modules.batchnorm._NormBase) for x in m.modules())
    assert any(isinstance(x, torch.nn.LayerNorm) for x in m.modules())


@pytest.mark.parametrize("name,shape", [("vit", (1, 8, 8)), ("mixer", (1, 8, 8)), ("vit", (3, 32, 32))])
def test_vmap_over_clients_equals_loop(name, shape):
    torch.manual_seed(0)
    models = [build(name, shape, 10) for _ in range(3)]
    params, buffers = stack_module_state(models)
    assert buffers == {}
    base = models[0]
    x = torch.randn(3, 4, *shape)
    y = torch.randint(0, 10, (3, 4))

    def loss(p, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(base, p, (xb,)), yb)

    with torch.no_grad():
        batched = vmap(lambda p, xb: functional_call(base, p, (xb,)))(params, x)
        loop = torch.stack([m(xi) for m, xi in zip(models, x)])
    torch.testing.assert_close(batched, loop, atol=1e-6, rtol=1e-6)
    grads = vmap(grad(loss))(params, x, y)
    for i, m in enumerate(models):
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(x[i]), y[i]).backward()
        for k, p in m.named_parameters():
            torch.testing.assert_close(grads[k][i], p.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["vit", "mixer"])
def test_reachable_from_a_config(name):
    # the configured model is the one built here, and the batched run (vmap over functional_call)
    # equals the per-client nn.Module loop of the serial engine
    cfg = small_config(**{"model.name": name, "algorithm.name": "dfedsam", "local.optimizer": "tram", "rounds": 3})
    sim = Simulation(cfg)
    assert sim.layout.size == PARAMS[(name, (1, 8, 8))]
    history = sim.run()
    serial = Simulation(cfg.replace(**{"engine.backend": "serial"})).run()
    assert_same_history(history, serial, tol=1e-6)
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05
