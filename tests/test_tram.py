"""dfl.optim TRAM: a step derived by hand, its limits (SGD, SAM), class == functional,
vmap == loop, vectorized == serial engine (DFedTRAM = dfedsam + tram)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

import dfl.optim as optim
from dfl.errors import ConfigError
from dfl.optim import Objective
from dfl.optim.tram import tram_radius
from dfl.simulation import Simulation
from tests.helpers import assert_same_history, training_config


pytestmark = pytest.mark.usefixtures("float64")


def linear(w):
    """logits = x @ w.T for one input x = [1]: the logits are w itself."""
    m = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w).view(2, 1))
    return m


X, Y = torch.ones(1, 1, dtype=torch.float64), torch.tensor([0])


def hand_step(lr, lam, rho):
    """Reference 0 (p_ref = [1/2, 1/2]), w = [1, 0], label 0, one SGD step along grad L(w + e).

    p = softmax(1, 0), p1 = 1 / (1 + e); KL(p_ref || p) = -log 2 - (log p0 + log p1) / 2;
    g = p - onehot(0) = [-p1, p1], ||g|| = sqrt(2) p1, so e = r [-1, 1] / sqrt(2) with
    r = min(lam * KL, rho); at w + e the logit gap is 1 - sqrt(2) r, q1 = 1 / (1 + exp(1 - sqrt(2) r))
    and w' = w - lr [-q1, q1].
    """
    p1 = 1 / (1 + math.e)
    p0 = 1 - p1
    kl = -math.log(2) - 0.5 * (math.log(p0) + math.log(p1))
    r = min(lam * kl, rho)
    q1 = 1 / (1 + math.exp(1 - math.sqrt(2) * r))
    return [1 + lr * q1, -lr * q1], r


@pytest.mark.parametrize("lam,rho", [(1.0, 0.5), (10.0, 0.5), (0.0, 0.5)])
def test_one_step_by_hand(lam, rho):
    want, r = hand_step(0.3, lam, rho)
    model = linear([1.0, 0.0])
    opt = optim.make("tram", lam=lam, rho=rho)
    state = opt.init({"weight": torch.zeros(2, 1)})  # reference = the zero model
    params = {"weight": torch.tensor([[1.0], [0.0]])}
    obj = Objective(lambda p: functional_call(model, p, (X,)), Y)
    new, _, loss = opt.step(params, state, obj, 0.3)
    assert new["weight"].flatten().tolist() == pytest.approx(want, abs=1e-12)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-12)
    radius = tram_radius(model(X), torch.zeros(1, 2), lam=lam, tau=1.0, rho=rho)
    assert float(radius) == pytest.approx(r, abs=1e-12)

    # the torch.optim class: same step, reference set to 0 by begin_round at the zero model
    cls_model = linear([0.0, 0.0])
    cls_opt = optim.TRAM(cls_model, lr=0.3, lam=lam, rho=rho)
    with torch.no_grad():
        cls_model.weight.copy_(torch.tensor([[1.0], [0.0]]))
    cls_opt.step(closure(cls_model, cls_opt, X, Y))
    assert cls_model.weight.flatten().tolist() == pytest.approx(want, abs=1e-12)


def closure(model, opt, x, y):
    def f():
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y) + opt.observe(logits, x)
        loss.backward()
        return loss
    return f


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def batches(seed=0, steps=6, b=7):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 5, generator=g), torch.randint(0, 3, (b,), generator=g)) for _ in range(steps)]


def params_of(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def run_functional(name, hp, model, data, round_every=3, lr=0.2):
    opt = optim.make(name, **hp)
    p = params_of(model)
    s = opt.init(p)
    for k, (x, y) in enumerate(data):
        if k % round_every == 0:
            s = opt.begin_round(p, s)
        p, s, _ = opt.step(p, s, Objective(lambda q, x=x: functional_call(model, q, (x,)), y), lr)
    return p


def test_first_step_of_a_round_is_sgd_and_huge_lam_is_sam():
    model, data = mlp(), batches()
    sgd = optim.make("sgd")
    p0 = params_of(model)
    x, y = data[0]
    obj = Objective(lambda q: functional_call(model, q, (x,)), y)
    tram = optim.make("tram", rho=0.3)
    a, _, _ = tram.step(p0, tram.begin_round(p0, tram.init(p0)), obj, 0.2)
    b, _, _ = sgd.step(p0, sgd.init(p0), obj, 0.2)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    # lam so large that the cap always binds: TRAM == SAM with rho = cap (after the first step)
    t = run_functional("tram", dict(rho=0.3, lam=1e9, momentum=0.5), model, data, round_every=100)
    s_opt = optim.make("sam", rho=0.3, momentum=0.5)
    p = params_of(model)
    st = s_opt.init(p)
    for k, (x, y) in enumerate(data):
        o = Objective(lambda q, x=x: functional_call(model, q, (x,)), y)
        p, st, _ = (optim.make("sgd", momentum=0.5).step if k == 0 else s_opt.step)(p, st, o, 0.2)
    for k in t:
        torch.testing.assert_close(t[k], p[k])


def test_class_equals_functional_with_rounds():
    hp = dict(rho=0.2, lam=3.0, tau=2.0, momentum=0.9, weight_decay=0.01)
    ref = mlp()
    want = run_functional("tram", hp, ref, batches())
    model = mlp()
    opt = optim.TRAM(model, lr=0.2, **hp)
    for k, (x, y) in enumerate(batches()):
        if k % 3 == 0:
            opt.begin_round()
        opt.step(closure(model, opt, x, y))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), want[name])
    sd = opt.state_dict()  # checkpoint round trip keeps the reference
    opt2 = optim.TRAM(mlp(1), lr=0.2, **hp)
    opt2.load_state_dict(sd)
    for a, b in zip(opt.reference().values(), opt2.reference().values()):
        torch.testing.assert_close(a, b)


def test_vmap_equals_loop():
    model = mlp()
    opt = optim.make("tram", rho=0.2, lam=2.0, momentum=0.9)
    base = params_of(model)
    P = {k: torch.stack([v + 0.1 * i for i in range(3)]) for k, v in base.items()}
    S = vmap(lambda p: opt.init(p))(P)
    S = vmap(opt.begin_round)({k: v * 0.9 for k, v in P.items()}, S)
    xs, ys = zip(*batches(steps=3))
    xb, yb = torch.stack(xs), torch.stack(ys)

    def one(p, s, x, y):
        return opt.step(p, s, Objective(lambda q: functional_call(model, q, (x,)), y), 0.2)

    newP, _, loss = vmap(one)(P, S, xb, yb)
    for i in range(3):
        p = {k: v[i] for k, v in P.items()}
        s = opt.begin_round({k: v * 0.9 for k, v in p.items()}, opt.init(p))
        q, _, li = one(p, s, xb[i], yb[i])
        for k in q:
            torch.testing.assert_close(newP[k][i], q[k])
        torch.testing.assert_close(loss[i], li)


def test_bad_hyperparameters_and_missing_observe():
    for bad in (dict(rho=-1.0), dict(lam=-0.1), dict(tau=0.0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            optim.make("tram", **bad)
        with pytest.raises(ConfigError):
            optim.TRAM(mlp(), lr=0.1, **bad)
    model = mlp()
    opt = optim.TRAM(model, lr=0.1)
    x, y = batches()[0]

    def no_observe():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(TypeError, match="observe"):
        opt.step(no_observe)
    assert optim.hyperparameters("tram")["rho"] == 0.5


def test_dfedtram_vectorized_equals_serial():
    torch.set_default_dtype(torch.float32)
    common = {"algorithm.name": "dfedsam", "local.optimizer": "tram", "local.momentum": 0.5, "local.rho": 0.1}
    v = Simulation(training_config(**common, **{"engine.backend": "vectorized"})).run()
    s = Simulation(training_config(**common, **{"engine.backend": "serial"})).run()
    assert v[-1]["test_acc"] > 0.3
    assert_same_history(v, s, tol=1e-6)
