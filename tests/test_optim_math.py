"""dfl.optim: single steps against hand-derived values, loss terms, validation, schedules."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import dfl.optim as optim
from dfl.errors import ConfigError
from dfl.optim import Objective, functional as Fo
from tests.helpers import quadratic_closure

A = np.array([[2.0, 1.0], [1.0, 3.0]])
W0 = np.array([1.0, -2.0])
LR = 0.1


pytestmark = pytest.mark.usefixtures("float64")


class QuadObjective(Objective):
    """f(w) = 1/2 w^T A w: ``forward`` returns the scalar loss, ``loss`` is the identity."""

    def loss(self, logits):
        return logits


def quad_obj():
    a = torch.tensor(A)
    return QuadObjective(forward=lambda p: 0.5 * p["w"] @ a @ p["w"], targets=torch.zeros(0))


def grad(w):
    return A @ w


def run_functional(name, steps, **hp):
    opt = optim.make(name, **hp)
    params = {"w": torch.tensor(W0)}
    state = opt.init(params)
    for _ in range(steps):
        params, state, loss = opt.step(params, state, quad_obj(), LR)
    return params["w"].numpy(), loss.item()


def run_class(cls, steps, **hp):
    w = torch.nn.Parameter(torch.tensor(W0))
    opt = cls([w], lr=LR, **hp)
    closure = quadratic_closure(opt, w, torch.tensor(A))
    for _ in range(steps):
        loss = opt.step(closure)
    return w.detach().numpy(), loss.item()


# ------------------------------------------------------------------ SGD


def sgd_by_hand(steps, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
    w, buf = W0.copy(), None
    for _ in range(steps):
        d = grad(w) + weight_decay * w                      # g + wd * w
        if momentum:
            buf = d if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        w = w - LR * d
    return w


SGD_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(momentum=0.5, dampening=0.3, weight_decay=0.01),
]


@pytest.mark.parametrize("hp", SGD_CASES)
def test_sgd_matches_hand_rule_and_torch(hp):
    expected = sgd_by_hand(3, **hp)
    np.testing.assert_allclose(run_functional("sgd", 3, **hp)[0], expected, rtol=1e-12)
    np.testing.assert_allclose(run_class(optim.SGD, 3, **hp)[0], expected, rtol=1e-12)
    np.testing.assert_allclose(run_class(torch.optim.SGD, 3, **hp)[0], expected, rtol=1e-12)


def test_sgd_first_step_written_out():
    # w1 = w0 - lr * (1 + m) * (A w0 + wd w0) for Nesterov with b_0 = g
    m, wd = 0.9, 0.1
    g = A @ W0 + wd * W0                                  # [0 + 0.1, -5 - 0.2] = [0.1, -5.2]
    np.testing.assert_allclose(g, [0.1, -5.2])
    expected = W0 - LR * (1 + m) * g
    got, loss = run_functional("sgd", 1, momentum=m, nesterov=True, weight_decay=wd)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert loss == pytest.approx(0.5 * W0 @ A @ W0)       # loss at w0 = 5.0


# ------------------------------------------------------------------ SAM family


def sam_by_hand(rho):
    g = grad(W0)
    e = rho * g / (np.linalg.norm(g) + 1e-12)
    return W0 - LR * grad(W0 + e)


def asam_by_hand(rho, eta):
    """T_w on w (adaptive_bias=True below: the parameter is named "w", and the reference,
    SamsungLabs/ASAM, scales only names containing "weight"; see test_optim_fidelity.py)."""
    g = grad(W0)
    t = np.abs(W0) + eta
    e = rho * t * t * g / (np.linalg.norm(t * g) + 1e-16)
    return W0 - LR * grad(W0 + e)


def gsam_by_hand(rho, alpha):
    g = grad(W0)
    e = rho * g / (np.linalg.norm(g) + 1e-12)
    gp = grad(W0 + e)
    cos = (g @ gp) / (np.linalg.norm(gp) * np.linalg.norm(g) + 1e-12)   # the reference's eps
    g_orth = g - cos * np.linalg.norm(g) * gp / (np.linalg.norm(gp) + 1e-12)
    assert abs(g_orth @ gp) < 1e-10                    # orthogonal up to the eps
    return W0 - LR * (gp - alpha * g_orth)


@pytest.mark.parametrize(
    "name,cls,hp,expected",
    [
        ("sam", optim.SAM, dict(rho=0.05), sam_by_hand(0.05)),
        ("sam", optim.SAM, dict(rho=0.5), sam_by_hand(0.5)),
        ("asam", optim.ASAM, dict(rho=0.5, eta=0.01, adaptive_bias=True), asam_by_hand(0.5, 0.01)),
        ("asam", optim.ASAM, dict(rho=0.2, eta=0.5, adaptive_bias=True), asam_by_hand(0.2, 0.5)),
        ("gsam", optim.GSAM, dict(rho=0.3, alpha=0.2), gsam_by_hand(0.3, 0.2)),
        ("gsam", optim.GSAM, dict(rho=0.3, alpha=0.0), sam_by_hand(0.3)),
    ],
)
def test_sam_family_one_step(name, cls, hp, expected):
    got_f, loss_f = run_functional(name, 1, **hp)
    got_c, loss_c = run_class(cls, 1, **hp)
    np.testing.assert_allclose(got_f, expected, rtol=1e-12)
    np.testing.assert_allclose(got_c, expected, rtol=1e-12)
    assert loss_f == loss_c == pytest.approx(5.0)        # unperturbed loss 1/2 w0^T A w0


def test_sam_helpers_directly():
    g = {"a": torch.tensor([3.0]), "b": torch.tensor([0.0, 4.0])}   # ||g|| = 5 over both
    e = Fo.sam_perturbation(g, 0.5)
    np.testing.assert_allclose(torch.cat([e["a"], e["b"]]).numpy(), [0.3, 0.0, 0.4])
    d = Fo.gsam_direction({"a": torch.tensor([1.0, 1.0])}, {"a": torch.tensor([2.0, 0.0])}, 0.5)
    np.testing.assert_allclose(d["a"].numpy(), [2.0, -0.5])  # g_orth = [0, 1]


@pytest.mark.parametrize("name,cls", [("sam", optim.SAM), ("asam", optim.ASAM), ("gsam", optim.GSAM)])
def test_rho_zero_is_base_sgd(name, cls):
    hp = dict(momentum=0.9, weight_decay=0.05)
    expected = sgd_by_hand(3, **hp)
    extra = dict(adaptive_bias=True) if name == "asam" else {}  # unnamed tensor: no warning
    # GSAM at rho = 0: g_orth = g - g * ||g||^2 / ((||g||^2 + 1e-12)(1 + 1e-12 / ||g||)), ~1e-13 g
    # with the reference's eps placement, hence rtol 1e-11
    np.testing.assert_allclose(run_functional(name, 3, rho=0.0, **hp, **extra)[0], expected, rtol=1e-11)
    np.testing.assert_allclose(run_class(cls, 3, rho=0.0, **hp, **extra)[0], expected, rtol=1e-11)


def test_sam_wraps_other_base_optimizers():
    w = torch.nn.Parameter(torch.tensor(W0))
    base = torch.optim.SGD([w], lr=LR)
    opt = optim.SAM(None, base_optimizer=base, rho=0.05)
    closure = quadratic_closure(opt, w, torch.tensor(A))
    opt.step(closure)
    np.testing.assert_allclose(w.detach().numpy(), sam_by_hand(0.05), rtol=1e-12)
    opt2 = optim.SAM([torch.nn.Parameter(torch.ones(2))], base_optimizer=torch.optim.Adam, lr=0.01)
    assert isinstance(opt2.base_optimizer, torch.optim.Adam)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["rho"] == 0.05
    with pytest.raises(TypeError, match="closure"):
        opt.step()


def test_sam_state_dict_round_trip_continues_the_same_steps():
    # the momentum buffer travels in the state dict: a copy loaded from it takes the same next step,
    # a fresh optimizer (no buffer) does not
    a = torch.tensor(A)

    def make(w0):
        w = torch.nn.Parameter(torch.tensor(w0))
        return w, optim.SAM(None, base_optimizer=torch.optim.SGD([w], lr=LR, momentum=0.9), rho=0.05)

    def step(w, opt):
        opt.step(quadratic_closure(opt, w, a))

    w, opt = make(W0)
    step(w, opt)
    w2, opt2 = make(w.detach().numpy().copy())
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as torch.save / torch.load: no shared buffers
    assert torch.equal(opt2.base_optimizer.state[w2]["momentum_buffer"], opt.base_optimizer.state[w]["momentum_buffer"])
    w3, fresh = make(w.detach().numpy().copy())
    step(w, opt)
    step(w2, opt2)
    step(w3, fresh)
    assert torch.equal(w2, w)
    assert (w3 - w).abs().max() > 1e-3


# ------------------------------------------------------------------ SAF / MESA loss terms


def test_kl_trajectory_loss_by_hand():
    # p = softmax(ref / tau), q = softmax(z / tau); KL(p || q) = sum p log(p / q)
    tau = 2.0
    z = torch.tensor([[2.0, 0.0]])
    ref = torch.tensor([[0.0, 0.0]])
    q1 = math.exp(1) / (math.exp(1) + 1)                      # softmax([1, 0])[0]
    kl = 0.5 * math.log(0.5 / q1) + 0.5 * math.log(0.5 / (1 - q1))
    assert Fo.kl_trajectory_loss(z, ref, tau).item() == pytest.approx(tau ** 2 * kl, rel=1e-12)
    # masked mean: the second row (identical outputs, KL 0) counts only when its mask is 1
    z2, ref2 = torch.cat([z, ref]), torch.cat([ref, ref])
    assert Fo.kl_trajectory_loss(z2, ref2, tau).item() == pytest.approx(tau ** 2 * kl / 2)
    m = torch.tensor([1.0, 0.0])
    assert Fo.kl_trajectory_loss(z2, ref2, tau, m).item() == pytest.approx(tau ** 2 * kl)
    assert Fo.kl_trajectory_loss(z2, ref2, tau, torch.zeros(2)).item() == 0.0


def test_saf_memory_ring_buffer():
    opt = optim.make("saf", saf_epochs=2)
    st = opt.init({"w": torch.zeros(1)}, num_samples=3, num_classes=2)
    mem, cnt = st["memory"], st["count"]
    idx = torch.tensor([0, 2])
    for visit in range(4):                 # sample 0 and 2 get outputs [v, -v] at visit v
        ref, valid = Fo.saf_read(mem, cnt, idx)
        if visit >= 2:                     # E = 2 visits back
            np.testing.assert_allclose(ref.numpy(), [[visit - 2, 2 - visit]] * 2)
        assert valid.tolist() == [visit >= 2] * 2
        mem, cnt = Fo.saf_write(mem, cnt, idx, torch.tensor([[float(visit), -float(visit)]] * 2))
    assert cnt.tolist() == [4, 0, 4]


def _linear_obj(x, y, idx):
    return Objective(lambda p: x @ p["W"].T + p["b"], y, idx)


def test_saf_step_gradient_includes_trajectory_term():
    tau, lam = 2.0, 0.7
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([0])
    params = {"W": torch.zeros(2, 2), "b": torch.zeros(2)}
    opt = optim.make("saf", lam=lam, tau=tau, saf_epochs=1)
    st = opt.init(params, num_samples=1, num_classes=2)
    ref = torch.tensor([[0.0, 2.0]])
    st = {**st, "memory": ref[:, None, :].clone(), "count": torch.tensor([1])}
    new, st2, loss = opt.step(params, st, _linear_obj(x, y, torch.tensor([0])), 1.0)
    # at W = 0, b = 0 the logits are 0: q = [1/2, 1/2]; p = softmax(ref / tau)
    p = torch.softmax(ref / tau, -1)[0]
    dz = (torch.tensor([0.5, 0.5]) - torch.tensor([1.0, 0.0])) + lam * tau * (0.5 - p)
    np.testing.assert_allclose(new["b"].numpy(), (-dz).numpy(), rtol=1e-12)
    assert loss.item() == pytest.approx(math.log(2))           # CE only
    np.testing.assert_allclose(st2["memory"][0, 0].numpy(), [0.0, 0.0])  # stored logits at w
    assert st2["count"].tolist() == [2]


def test_mesa_step_and_ema():
    tau, lam, decay = 2.0, 0.5, 0.9
    x = torch.tensor([[1.0, 0.0]])
    params = {"W": torch.zeros(2, 2), "b": torch.zeros(2)}
    opt = optim.make("mesa", lam=lam, tau=tau, ema_decay=decay)
    st = opt.init(params)
    st["ema"] = {"W": torch.zeros(2, 2), "b": torch.tensor([0.0, 2.0])}  # EMA logits [0, 2]
    new, st2, _ = opt.step(params, st, _linear_obj(x, torch.tensor([0]), torch.tensor([0])), 1.0)
    p = torch.softmax(torch.tensor([0.0, 2.0]) / tau, -1)
    dz = torch.tensor([-0.5, 0.5]) + lam * tau * (0.5 - p)
    np.testing.assert_allclose(new["b"].numpy(), (-dz).numpy(), rtol=1e-12)
    expected_ema = decay * torch.tensor([0.0, 2.0]) + (1 - decay) * new["b"]
    np.testing.assert_allclose(st2["ema"]["b"].numpy(), expected_ema.numpy(), rtol=1e-12)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "name,hp,needle",
    [
        ("sgd", dict(momentum=-0.1), "momentum: must be in [0, 1), got -0.1"),
        ("sgd", dict(weight_decay=-1), "weight_decay: must be >= 0, got -1"),
        ("sgd", dict(nesterov=True), "nesterov"),
        ("sgd", dict(dampening=2.0), "dampening: must be in [0, 1], got 2.0"),
        ("sam", dict(rho=-0.05), "rho: must be >= 0, got -0.05"),
        ("sam", dict(rho="big"), "rho: must be a finite number, got 'big'"),
        ("asam", dict(eta=-1.0), "eta: must be >= 0, got -1.0"),
        ("gsam", dict(alpha=-0.3), "alpha: must be >= 0, got -0.3"),
        ("saf", dict(tau=0.0), "tau: must be > 0, got 0.0"),
        ("saf", dict(saf_epochs=0), "saf_epochs: must be an int >= 1, got 0"),
        ("mesa", dict(ema_decay=1.0), "ema_decay: must be in [0, 1), got 1.0"),
        ("mesa", dict(lam=-2), "lam: must be >= 0, got -2"),
        ("sam", dict(rhoo=0.1), "unknown hyperparameter 'rhoo' for optimizer 'sam'; allowed:"),
        ("sgd", dict(lr=0.1), "passed to step()"),
    ],
)
def test_bad_hyperparameters(name, hp, needle):
    with pytest.raises(ConfigError) as err:
        optim.make(name, **hp)
    assert needle in str(err.value)


def test_bad_class_hyperparameters_and_names():
    w = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ConfigError, match=r"lr: must be > 0, got -0.1"):
        optim.SGD(w, lr=-0.1)
    with pytest.raises(ConfigError, match=r"rho: must be >= 0, got -1"):
        optim.SAM(w, rho=-1, lr=0.1)
    with pytest.raises(ValueError, match=r"lr: must be > 0"):       # ConfigError is a ValueError
        optim.GSAM(w, lr=0.0)
    with pytest.raises(ConfigError, match="num_samples"):
        optim.SAF(w, num_samples=0, num_classes=10, lr=0.1)
    with pytest.raises(ConfigError, match="did you mean 'gsam'"):
        optim.make("gsma")
    with pytest.raises(ConfigError, match="num_samples"):
        optim.make("saf").init({"w": torch.zeros(1)})
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        optim.schedule("cosin", 0.1)


def test_hyperparameter_names_and_defaults():
    sgd = dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0)
    assert optim.hyperparameters("sgd") == sgd
    assert optim.hyperparameters("sam") == {**sgd, "rho": 0.05}
    # ASAM's adaptive_bias, GSAM's alpha 0.4 and rho_min, SAF's / MESA's warmup_rounds and MESA's
    # ema_decay 0.9: set against the reference code (docs/fidelity_optim.md)
    assert optim.hyperparameters("asam") == {**sgd, "rho": 0.5, "eta": 0.01, "adaptive_bias": False}
    assert optim.hyperparameters("gsam") == {**sgd, "rho": 0.05, "alpha": 0.4, "rho_min": None}
    assert optim.hyperparameters("saf") == {
        **sgd, "lam": 0.3, "tau": 5.0, "saf_epochs": 3, "warmup_rounds": 0}
    assert optim.hyperparameters("mesa") == {
        **sgd, "lam": 0.8, "tau": 5.0, "ema_decay": 0.9, "warmup_steps": 0, "warmup_rounds": 0}
    assert optim.functional.make is optim.make


# ------------------------------------------------------------------ schedules


def test_schedules():
    assert optim.SCHEDULES.names() == ["constant", "cosine", "exponential"]
    assert optim.schedule("constant", 0.1)(50) == 0.1
    f = optim.schedule("exponential", 0.1)                 # default decay 0.998
    assert f(0) == 0.1 and f(10) == pytest.approx(0.1 * 0.998 ** 10)
    c = optim.schedule("cosine", 0.2, total_rounds=100)
    assert c(0) == pytest.approx(0.2) and c(50) == pytest.approx(0.1) and c(100) == pytest.approx(0.0)
    assert c(200) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="total_rounds"):
        optim.schedule("cosine", 0.1)
    with pytest.raises(ConfigError, match=r"decay: must be in \(0, 1\], got 1.5"):
        optim.schedule("exponential", 0.1, decay=1.5)
