"""The engine's in-place descent (SGDStep.descend_) over stacked clients equals the pure per-client
step bit for bit; the engine's three parts of a step compose to the pure step."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from dfl import optim
from dfl.errors import ConfigError
from dfl.optim import SGDStep

HPARAMS = [dict(), dict(weight_decay=5e-4), dict(momentum=0.9, weight_decay=1e-3),
           dict(momentum=0.9, nesterov=True), dict(momentum=0.5, dampening=0.3, weight_decay=1e-2)]
STEPS = {"all first": [0, 0, 0, 0], "none first": [1, 3, 2, 7], "mixed": [0, 2, 0, 5]}


def stacked(c: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(c, 3, 4, generator=gen), "b": torch.randn(c, 4, generator=gen)}


@pytest.mark.parametrize("hp", HPARAMS)
@pytest.mark.parametrize("steps", list(STEPS))
@pytest.mark.parametrize("mask", [None, [True, False, True, True]])
def test_descend_in_place_equals_pure_descend_per_client(hp, steps, mask):
    gen = torch.Generator().manual_seed(0)
    opt = SGDStep(**hp)
    params, grads = stacked(4, gen), stacked(4, gen)
    bufs = stacked(4, gen) if opt.momentum else {}
    state = {"momentum_buffer": bufs, "step": torch.tensor(STEPS[steps])}
    mask_t = None if mask is None else torch.tensor(mask)
    expect_p, expect_b, expect_step = [], [], []
    for i in range(4):
        one = {"momentum_buffer": {k: v[i] for k, v in bufs.items()}, "step": state["step"][i]}
        p, s = opt.descend({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in grads.items()}, one, 0.1)
        keep = mask is not None and not mask[i]
        expect_p.append({k: params[k][i] if keep else p[k] for k in p})
        expect_b.append({k: bufs[k][i] if keep else s["momentum_buffer"][k] for k in bufs})
        expect_step.append(int(state["step"][i]) + (0 if keep else 1))
    w_storage = params["w"].data_ptr()
    new_state = opt.descend_(params, {k: v.clone() for k, v in grads.items()}, state, 0.1, mask_t)
    assert params["w"].data_ptr() == w_storage  # in place
    for k in params:
        assert torch.equal(params[k], torch.stack([e[k] for e in expect_p])), k
    for k in bufs:
        assert torch.equal(new_state["momentum_buffer"][k], torch.stack([e[k] for e in expect_b])), k
    assert new_state["step"].tolist() == expect_step


@pytest.mark.parametrize("hp", [dict(weight_decay=5e-4), dict(momentum=0.9, weight_decay=5e-4)])
def test_descend_in_place_on_views_of_a_bank(hp):
    """The engine's case: the weights are column slices of the (c, d) bank (not contiguous)."""
    gen = torch.Generator().manual_seed(1)
    opt = SGDStep(**hp)
    bank = torch.randn(5, 3 * 4 + 4 + 7, generator=gen)
    params = {"w": bank[:, 2:14].view(5, 3, 4), "b": bank[:, 14:18]}
    grads = {"w": torch.randn(5, 3, 4, generator=gen), "b": torch.randn(5, 4, generator=gen)}
    bufs = {k: torch.randn(v.shape, generator=gen) for k, v in grads.items()} if opt.momentum else {}
    state = {"momentum_buffer": bufs, "step": torch.tensor([3, 1, 2, 5, 4])}
    want, _ = opt.descend({k: v.clone() for k, v in params.items()}, grads,
                          {"momentum_buffer": {k: v.clone() for k, v in bufs.items()}, "step": torch.tensor(3)}, 0.2)
    untouched = bank[:, [0, 1, 18, 19, 20, 21, 22]].clone()
    opt.descend_(params, {k: v.clone() for k, v in grads.items()}, state, 0.2)
    for k in params:
        assert torch.equal(params[k], want[k]), k
    assert torch.equal(bank[:, [0, 1, 18, 19, 20, 21, 22]], untouched)  # other columns kept


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("name", ["sgd", "sam", "asam", "gsam", "saf", "mesa", "tram"])
def test_gradient_descend_after_descent_compose_to_step(name, momentum):
    """The engine's three parts (vmap(gradient), descend_, vmap(after_descent)) == vmap(step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    opt = optim.make(name, momentum=momentum, weight_decay=1e-3)
    c, n = 3, 8
    one = {k: p.detach() for k, p in model.named_parameters()}
    state = vmap(lambda _: opt.init(one, num_samples=n, num_classes=3))(torch.zeros(c))
    state = torch.utils._pytree.tree_map(lambda t: t.contiguous().clone(), state)  # own memory per client
    params = {k: v.unsqueeze(0).repeat(c, *[1] * v.dim()) + 0.01 * torch.randn(c, *v.shape) for k, v in one.items()}
    x, y, idx = torch.randn(c, n, 5), torch.randint(0, 3, (c, n)), torch.arange(n).expand(c, n)

    def objective(x, y, index):
        return optim.Objective(forward=lambda q: functional_call(model, q, (x,)), targets=y, index=index)

    for _ in range(2):  # the second step has momentum buffers and a step count
        want_p, want_s, want_loss = vmap(lambda p, s, x, y, i: opt.step(p, s, objective(x, y, i), 0.05))(
            params, state, x, y, idx)
        grads, state, loss = vmap(lambda p, s, x, y, i: opt.gradient(p, s, objective(x, y, i)))(params, state, x, y, idx)
        state = opt.descend_(params, grads, state, 0.05)
        state = vmap(opt.after_descent)(params, state)
        torch.testing.assert_close(loss, want_loss, rtol=0, atol=0)
        for k in params:
            torch.testing.assert_close(params[k], want_p[k], rtol=0, atol=0)
        torch.utils._pytree.tree_map(lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=0), state, want_s)


@pytest.mark.parametrize("name", ["sgd", "sam", "asam", "gsam", "saf", "mesa", "tram"])
def test_after_descent_is_declared_where_it_is_defined(name):
    """The engines skip after_descent unless has_after_descent: a class that overrides it says so."""
    cls = optim.OPTIMIZERS[name]
    assert cls.has_after_descent == (cls.after_descent is not optim.FunctionalOptimizer.after_descent)
    assert cls.has_after_descent == (name == "mesa")


def test_a_method_takes_its_descent_step_as_a_value():
    """make's flat keys == the method over an SGDStep; the base step's keys are every method's."""
    base = SGDStep(momentum=0.9, nesterov=True, weight_decay=1e-3)
    built = optim.functional.FunctionalSAM(rho=0.1, base=base)
    made = optim.make("sam", rho=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    assert made.base == base and made.rho == built.rho
    assert repr(made) == repr(built) == f"FunctionalSAM(rho=0.1, base={base!r})"
    for name in optim.OPTIMIZERS:
        assert list(optim.hyperparameters(name))[:4] == ["momentum", "dampening", "nesterov", "weight_decay"]
    with pytest.raises(ConfigError, match=r"^base: must be a SGDStep, got \{'momentum': 0.9\}$"):
        optim.functional.FunctionalSAM(base={"momentum": 0.9})
