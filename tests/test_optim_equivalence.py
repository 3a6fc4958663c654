"""dfl.optim: torch.optim classes == functional form; vmap over clients == per-client loop."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_map

import dfl.optim as optim
from dfl.optim import Objective
from dfl.engines.serial import closure

N, D, C, B = 12, 5, 3, 6
LR = 0.2
SGD_HP = dict(momentum=0.9, weight_decay=0.01)
CASES = {
    "sgd": dict(**SGD_HP, nesterov=True),
    "sam": dict(**SGD_HP, rho=0.1),
    "asam": dict(**SGD_HP, rho=0.5, eta=0.01),
    "gsam": dict(**SGD_HP, rho=0.1, alpha=0.3),
    "saf": dict(**SGD_HP, lam=0.5, tau=2.0, saf_epochs=1),
    "mesa": dict(**SGD_HP, lam=0.8, tau=2.0, ema_decay=0.7, warmup_steps=1),
    "tram": dict(**SGD_HP, rho=0.3, lam=2.0),
}


pytestmark = pytest.mark.usefixtures("float64")


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Tanh(), torch.nn.Linear(8, C))


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    # two epochs of two batches each: every sample is revisited (SAF's memory is used)
    order = [torch.randperm(N, generator=g)[:B] for _ in range(2)]
    order = order + order
    return x, y, order


def make_class(name, model):
    hp = dict(CASES[name])
    if name == "sgd":
        return optim.SGD(model.parameters(), lr=LR, **hp)
    if name == "saf":
        return optim.SAF(model.parameters(), num_samples=N, num_classes=C, lr=LR, **hp)
    if name == "mesa":
        return optim.MESA(model, lr=LR, **hp)
    if name == "tram":
        return optim.TRAM(model, lr=LR, **hp)
    if name == "asam":  # names: T_w on the weight tensors only, as the functional form by key
        return optim.ASAM(model.named_parameters(), lr=LR, **hp)
    cls = {"sam": optim.SAM, "gsam": optim.GSAM}[name]
    return cls(model.parameters(), lr=LR, **hp)


def generic_class(name, model):
    """What the serial engine builds: the registered functional class's torch.optim shell."""
    return optim.make(name, **CASES[name]).torch_optimizer(model, lr=LR, num_samples=N, num_classes=C)


def class_run(name, model, x, y, order, build=make_class):
    opt = build(name, model)
    losses = []
    for idx in order:  # SAF / MESA terms added as the serial engine adds them
        losses.append(opt.step(closure(model, opt, x[idx], y[idx], idx)).item())
    return losses


def objective(model, xb, yb, idx):
    return Objective(lambda p: functional_call(model, p, (xb,)), yb, idx)


def functional_run(name, model, params, x, y, order):
    opt = optim.make(name, **CASES[name])
    state = opt.init(params, num_samples=N, num_classes=C)
    state = opt.begin_round(params, state)
    losses = []
    for idx in order:
        params, state, loss = opt.step(params, state, objective(model, x[idx], y[idx], idx), LR)
        losses.append(loss)
    return params, state, losses


@pytest.mark.parametrize("name", list(CASES))
def test_class_equals_functional(name):
    x, y, order = data()
    model = mlp()
    params0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    params, _, f_losses = functional_run(name, mlp(), params0, x, y, order)
    c_losses = class_run(name, model, x, y, order)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), params[k], rtol=1e-10, atol=1e-12)
    moved = max((params[k] - params0[k]).abs().max().item() for k in params)
    assert moved > 1e-3
    # both report the cross-entropy (SAF's / MESA's trajectory term is added to the gradient only)
    torch.testing.assert_close(torch.stack(f_losses), torch.tensor(c_losses), rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_registered_class_builds_its_shell_as_the_constructor_does(name):
    x, y, order = data()
    explicit, generic = mlp(), mlp()
    assert type(generic_class(name, mlp())) is optim.OPTIMIZERS[name].shell is type(make_class(name, mlp()))
    a = class_run(name, explicit, x, y, order)
    b = class_run(name, generic, x, y, order, build=generic_class)
    assert a == b
    for p, q in zip(explicit.parameters(), generic.parameters()):
        assert torch.equal(p, q)


def stack(trees):
    return tree_map(lambda *xs: torch.stack(xs), *trees)


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_over_clients_equals_loop(name):
    model = mlp()
    opt = optim.make(name, **CASES[name])
    clients = []
    for c in range(3):
        params = {k: v.detach().clone() for k, v in mlp(seed=c).named_parameters()}
        clients.append((params, opt.init(params, num_samples=N, num_classes=C), data(seed=c)))
    leaves, _ = tree_flatten(clients[0][1])
    assert all(isinstance(t, torch.Tensor) for t in leaves)

    def client_step(params, state, xb, yb, idx, lr):
        return opt.step(params, state, objective(model, xb, yb, idx), lr)

    batched = vmap(client_step, in_dims=(0, 0, 0, 0, 0, None))
    P = stack([c[0] for c in clients])
    S = stack([c[1] for c in clients])
    S = vmap(opt.begin_round)(P, S)
    loop = [(c[0], c[1]) for c in clients]
    lr = torch.tensor(LR)
    for step in range(4):
        xs, ys, idxs = [], [], []
        for c, (_, _, (x, y, order)) in enumerate(clients):
            idxs.append(order[step])
            xs.append(x[order[step]])
            ys.append(y[order[step]])
        P, S, L = batched(P, S, torch.stack(xs), torch.stack(ys), torch.stack(idxs), lr)
        losses = []
        for c in range(3):
            p, s, loss = client_step(*loop[c], xs[c], ys[c], idxs[c], LR)
            loop[c] = (p, s)
            losses.append(loss)
        torch.testing.assert_close(L, torch.stack(losses), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(P, stack([p for p, _ in loop]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(S, stack([s for _, s in loop]), rtol=1e-10, atol=1e-12)


def test_weights_mask_padding_in_vmap():
    """A zero-weight (padding) sample does not change the step."""
    model = mlp()
    opt = optim.make("sam", rho=0.05)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = opt.init(params)
    x, y, _ = data()
    idx = torch.arange(4)
    full = Objective(lambda p: functional_call(model, p, (x[:4],)), y[:4], idx,
                     torch.tensor([1.0, 1.0, 1.0, 0.0]))
    part = Objective(lambda p: functional_call(model, p, (x[:3],)), y[:3], idx[:3])
    a = opt.step(params, state, full, LR)
    b = opt.step(params, state, part, LR)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[2], b[2])
