"""dfl.optim against the reference code of each method (docs/fidelity_optim.md): GSAM's rho_t
(ProportionScheduler), ASAM's T_w on weight tensors only, SAF's and MESA's warm-up rounds, MESA's
teacher at a round start, TRAM's KL reduction. Each step is derived by hand on tiny tensors."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dfl.optim as optim
from dfl.errors import ConfigError
from dfl.optim import Objective, Progress
from dfl.optim import functional as Fo
from dfl.optim.asam import is_weight
from dfl.optim.gsam import gsam_rho
from dfl.optim.tram import tram_radius
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_same_history, quadratic_closure

pytestmark = pytest.mark.usefixtures("float64")

LR = 0.1


class ValueObjective(Objective):
    """``forward`` returns the scalar loss itself (``loss`` is the identity)."""

    def loss(self, logits):
        return logits


# ------------------------------------------------------------------ GSAM: rho_t follows the lr

A = np.array([[2.0, 1.0], [1.0, 3.0]])
W0 = np.array([1.0, -2.0])


def quad():
    a = torch.tensor(A)
    return ValueObjective(forward=lambda p: 0.5 * p["w"] @ a @ p["w"], targets=torch.zeros(0))


def test_gsam_rho_follows_the_learning_rate_as_proportion_scheduler():
    # (rho_t - rho_min) / (rho - rho_min) = (lr - 0) / (lr_max - 0)
    assert gsam_rho(0.05, 0.01, Progress(lr=0.05, lr_max=0.1, round=3)) == pytest.approx(0.03)
    assert gsam_rho(0.05, 0.01, Progress(lr=0.1, lr_max=0.1, round=0)) == pytest.approx(0.05)
    assert gsam_rho(0.05, 0.01, Progress(lr=0.0, lr_max=0.1, round=9)) == pytest.approx(0.01)
    assert gsam_rho(0.05, None, Progress(lr=0.05, lr_max=0.1, round=3)) == 0.05  # constant
    assert gsam_rho(0.05, 0.01, None) == 0.05                                   # at the peak


def gsam_by_hand(rho_t, alpha):
    g = A @ W0                                            # [0, -5]
    e = rho_t * g / (np.linalg.norm(g) + 1e-12)           # [0, -rho_t]
    gp = A @ (W0 + e)
    cos = g @ gp / (np.linalg.norm(gp) * np.linalg.norm(g) + 1e-12)
    g_orth = g - cos * np.linalg.norm(g) * gp / (np.linalg.norm(gp) + 1e-12)
    return W0 - LR * (gp - alpha * g_orth)


def test_gsam_step_functional_and_shell_use_rho_t():
    hp = dict(rho=0.5, rho_min=0.1, alpha=0.4)
    progress = Progress(lr=0.025, lr_max=0.1, round=4)   # rho_t = 0.1 + 0.4 * 0.25 = 0.2
    want = gsam_by_hand(0.2, 0.4)
    assert not np.allclose(want, gsam_by_hand(0.5, 0.4))
    opt = optim.make("gsam", **hp)
    p = {"w": torch.tensor(W0)}
    got, _, _ = opt.step(p, opt.init(p), quad(), LR, progress)
    np.testing.assert_allclose(got["w"].numpy(), want, rtol=1e-12)
    got0, _, _ = opt.step(p, opt.init(p), quad(), LR)    # no progress: rho_t = rho
    np.testing.assert_allclose(got0["w"].numpy(), gsam_by_hand(0.5, 0.4), rtol=1e-12)

    w = torch.nn.Parameter(torch.tensor(W0))
    shell = optim.GSAM([w], lr=LR, **hp)
    shell.set_progress(progress)
    shell.step(quadratic_closure(shell, w, torch.tensor(A)))
    np.testing.assert_allclose(w.detach().numpy(), want, rtol=1e-12)
    assert shell.rho_t() == pytest.approx(0.2)


def test_gsam_rho_min_validation_and_default_alpha():
    with pytest.raises(ConfigError, match=r"rho_min: must be in \[0, rho\] = \[0, 0.05\] .*got 0.1"):
        optim.make("gsam", rho_min=0.1)
    with pytest.raises(ConfigError, match="rho_min: must be a finite number"):
        optim.GSAM([torch.nn.Parameter(torch.ones(1))], lr=0.1, rho_min="x")
    assert optim.hyperparameters("gsam")["alpha"] == 0.4  # juntang-zhuang/GSAM example/train.py


# ------------------------------------------------------------------ ASAM: T_w on weights only


class Tiny(torch.nn.Module):
    """fc.weight = [1, -2], fc.bias = [0.5]; loss 1/2 (2 W_1^2 + 3 W_2^2) + 1/2 4 b^2."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0]]))
            self.fc.bias.copy_(torch.tensor([0.5]))

    @staticmethod
    def loss(p):
        a = torch.tensor([[2.0, 3.0]])
        return 0.5 * (a * p["fc.weight"] ** 2).sum() + 2.0 * (p["fc.bias"] ** 2).sum()


def asam_by_hand(rho, eta, scale_bias):
    w, b = np.array([1.0, -2.0]), np.array([0.5])
    gw, gb = np.array([2.0, -6.0]), np.array([2.0])        # grad: [2 W_1, 3 W_2], 4 b
    tw = np.abs(w) + eta                                   # [1.01, 2.01]
    tb = np.abs(b) + eta if scale_bias else np.ones(1)     # the reference: biases get T = 1
    n = np.sqrt(np.sum((tw * gw) ** 2) + np.sum((tb * gb) ** 2))  # the bias counts in the norm
    ew, eb = rho * tw ** 2 * gw / (n + 1e-16), rho * tb ** 2 * gb / (n + 1e-16)
    return (w - LR * np.array([2.0, 3.0]) * (w + ew), b - LR * 4.0 * (b + eb))


def test_is_weight_is_the_reference_name_rule():
    assert is_weight("fc.weight") and is_weight("layer1.0.gn1.weight") and is_weight("0.weight")
    assert not is_weight("fc.bias") and not is_weight("w")


@pytest.mark.parametrize("adaptive_bias", [False, True])
def test_asam_step_functional_and_shell(adaptive_bias):
    rho, eta = 0.5, 0.01
    want_w, want_b = asam_by_hand(rho, eta, adaptive_bias)
    other_w, _ = asam_by_hand(rho, eta, not adaptive_bias)
    assert not np.allclose(want_w, other_w)                # the bias's T changes the norm
    opt = optim.make("asam", rho=rho, eta=eta, adaptive_bias=adaptive_bias)
    p = {k: v.detach().clone() for k, v in Tiny().named_parameters()}
    got, _, _ = opt.step(p, opt.init(p), ValueObjective(Tiny.loss, torch.zeros(0)), LR)
    np.testing.assert_allclose(got["fc.weight"].flatten().numpy(), want_w, rtol=1e-12)
    np.testing.assert_allclose(got["fc.bias"].numpy(), want_b, rtol=1e-12)

    for as_model in (True, False):                          # the model or its named parameters
        model = Tiny()
        shell = optim.ASAM(model if as_model else model.named_parameters(), lr=LR, rho=rho,
                           eta=eta, adaptive_bias=adaptive_bias)

        def closure():
            shell.zero_grad()
            loss = Tiny.loss(dict(model.named_parameters()))
            loss.backward()
            return loss

        shell.step(closure)
        np.testing.assert_allclose(model.fc.weight.detach().flatten().numpy(), want_w, rtol=1e-12)
        np.testing.assert_allclose(model.fc.bias.detach().numpy(), want_b, rtol=1e-12)


def test_asam_shell_without_names_scales_all_with_a_warning():
    model = Tiny()
    with pytest.warns(UserWarning, match="without a name"):
        optim.ASAM(model.parameters(), lr=LR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.ASAM(Tiny().parameters(), lr=LR, adaptive_bias=True)  # all scaled anyway: silent
    with pytest.raises(ConfigError, match="adaptive_bias: must be a bool, got 1"):
        optim.make("asam", adaptive_bias=1)


# ------------------------------------------------------------------ SAF / MESA: warm-up rounds

TAU, LAM = 2.0, 0.5
X1, Y1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0])


def linear_obj(index=torch.tensor([0])):
    return Objective(lambda p: X1 @ p["W"].T + p["b"], Y1, index)


def zeros():
    return {"W": torch.zeros(2, 2), "b": torch.zeros(2)}


def kl_grad_b(ref_logits):
    """d/dz of lam tau^2 KL(softmax(ref / tau) || softmax(z / tau)) at z = 0: lam tau (1/2 - p)."""
    p = torch.softmax(ref_logits / TAU, -1)
    return LAM * TAU * (0.5 - p)


CE_GRAD_B = torch.tensor([-0.5, 0.5])                     # softmax(0) - onehot(0)


@pytest.mark.parametrize("round_,on", [(0, False), (1, False), (2, True), (5, True)])
def test_mesa_kl_starts_after_warmup_rounds(round_, on):
    opt = optim.make("mesa", lam=LAM, tau=TAU, ema_decay=0.9, warmup_rounds=2)
    st = opt.init(zeros())
    st["ema"] = {"W": torch.zeros(2, 2), "b": torch.tensor([0.0, 2.0])}  # teacher logits [0, 2]
    new, st2, _ = opt.step(zeros(), st, linear_obj(), 1.0, Progress(lr=1.0, lr_max=1.0, round=round_))
    want = CE_GRAD_B + (kl_grad_b(torch.tensor([0.0, 2.0])) if on else 0.0)
    np.testing.assert_allclose(new["b"].numpy(), (-want).numpy(), rtol=1e-12)
    # the teacher moves in the warm-up rounds too: v = 0.9 v + 0.1 w
    np.testing.assert_allclose(st2["ema"]["b"].numpy(), (0.9 * torch.tensor([0.0, 2.0]) + 0.1 * new["b"]).numpy())
    # without progress: round 0, in the warm-up
    new0, _, _ = opt.step(zeros(), st, linear_obj(), 1.0)
    np.testing.assert_allclose(new0["b"].numpy(), (-CE_GRAD_B).numpy(), rtol=1e-12)


def test_mesa_shell_reads_the_round_from_set_progress():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 2.0]))         # the teacher starts here
    opt = optim.MESA(model, lr=1.0, lam=LAM, tau=TAU, warmup_rounds=2)
    with torch.no_grad():
        model.bias.zero_()                                 # the student moves to zeros
    logits = model(X1)
    assert float(opt.trajectory_loss(logits, X1)) == 0.0   # no progress: round 0
    opt.set_progress(Progress(lr=1.0, lr_max=1.0, round=1))
    assert float(opt.trajectory_loss(logits, X1)) == 0.0
    opt.set_progress(Progress(lr=1.0, lr_max=1.0, round=2))
    p = torch.softmax(torch.tensor([0.0, 2.0]) / TAU, -1)
    kl = float((p * (p.log() - math.log(0.5))).sum())      # KL(p || uniform)
    assert opt.trajectory_loss(logits, X1).item() == pytest.approx(LAM * TAU ** 2 * kl, rel=1e-12)


def test_mesa_teacher_restarts_at_the_round_start_model():
    """Chosen rule: v = w at every round start (init and begin_round), then
    v_k = d v_{k-1} + (1 - d) w_k; two steps: v_2 = d^2 w_0 + d (1 - d) w_1 + (1 - d) w_2."""
    d = 0.9
    opt = optim.make("mesa", lam=LAM, tau=TAU, ema_decay=d)
    assert opt.ema_decay == optim.hyperparameters("mesa")["ema_decay"] == 0.9
    w0 = {"W": torch.tensor([[0.5, 0.0], [0.0, -0.5]]), "b": torch.zeros(2)}
    st = opt.init(w0)
    w1, st, _ = opt.step(w0, st, linear_obj(), 0.5)
    w2, st, _ = opt.step(w1, st, linear_obj(), 0.5)
    for k in w0:
        want = d * d * w0[k] + d * (1 - d) * w1[k] + (1 - d) * w2[k]
        np.testing.assert_allclose(st["ema"][k].numpy(), want.numpy(), rtol=1e-12)
    # next round (state kept, reset_state = false): the teacher restarts at the new model
    mixed = {k: 0.5 * v for k, v in w2.items()}            # e.g. after gossip
    st = opt.begin_round(mixed, st)
    for k in w0:
        assert torch.equal(st["ema"][k], mixed[k])
    # the torch.optim shell does the same
    model = torch.nn.Linear(2, 2)
    shell = optim.MESA(model, lr=0.5)
    with torch.no_grad():
        model.bias.fill_(3.0)
    shell.begin_round()
    assert torch.equal(shell.ema()["bias"], torch.full((2,), 3.0))


@pytest.mark.parametrize("round_,on", [(0, False), (1, True)])
def test_saf_kl_starts_after_warmup_rounds(round_, on):
    opt = optim.make("saf", lam=LAM, tau=TAU, saf_epochs=1, warmup_rounds=1)
    st = opt.init(zeros(), num_samples=1, num_classes=2)
    ref = torch.tensor([[0.0, 2.0]])
    st = {**st, "memory": ref[:, None, :].clone(), "count": torch.tensor([1])}
    new, st2, _ = opt.step(zeros(), st, linear_obj(), 1.0, Progress(lr=1.0, lr_max=1.0, round=round_))
    want = CE_GRAD_B + (kl_grad_b(ref[0]) if on else 0.0)
    np.testing.assert_allclose(new["b"].numpy(), (-want).numpy(), rtol=1e-12)
    assert st2["count"].tolist() == [2]                    # the outputs are stored in any round


def test_saf_mesa_kl_is_the_reference_expression():
    """AngusDujw/SAF: F.kl_div(F.softmax(out / T).log(), F.softmax(old / T), reduction="none")
    .sum(-1).mean() * T ** 2."""
    g = torch.Generator().manual_seed(0)
    out, old = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ref = F.kl_div(F.softmax(out / TAU, -1).log(), F.softmax(old / TAU, -1),
                   reduction="none").sum(-1).mean() * TAU ** 2
    torch.testing.assert_close(Fo.kl_trajectory_loss(out, old, TAU), ref, rtol=1e-12, atol=0)


# ------------------------------------------------------------------ TRAM: the KL reduction


def test_tram_radius_is_the_batchmean_kl_and_lam_recovers_the_code():
    # two samples, three classes, temperature 1
    z = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])   # q_1 = 1/3 each; q_2 = [1/2, 1/4, 1/4]
    r = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])   # p_1 = [1/2, 1/4, 1/4]; p_2 = 1/3
    kl1 = 0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75)             # KL(p_1 || q_1)
    kl2 = (math.log(2 / 3) + 2 * math.log(4 / 3)) / 3                 # KL(p_2 || q_2)
    mean = (kl1 + kl2) / 2
    assert float(tram_radius(z, r, lam=1.0, tau=1.0, rho=10.0)) == pytest.approx(mean, rel=1e-12)
    assert float(tram_radius(z, r, lam=1.0, tau=1.0, rho=0.01)) == 0.01          # the cap
    # tomsherborne/tram_optimizer kl.py: kl_div(log_softmax(y), log_softmax(x), log_target=True,
    # reduction="mean") / x.size(0) = sum_i KL_i / (B^2 C) = our d_t with lam = 1 / (B C)
    with warnings.catch_warnings():  # torch warns that "mean" is not "batchmean": the point here
        warnings.simplefilter("ignore", UserWarning)
        code = F.kl_div(F.log_softmax(z, -1), F.log_softmax(r, -1), log_target=True,
                        reduction="mean") / r.size(0)
    assert float(code) == pytest.approx((kl1 + kl2) / (2 * 2 * 3), rel=1e-12)
    assert float(tram_radius(z, r, lam=1 / 6, tau=1.0, rho=10.0)) == pytest.approx(float(code), rel=1e-12)


# ------------------------------------------------------------------ engines: progress and rounds


@pytest.mark.parametrize("opt,extra", [
    ("gsam", {"local.rho": 0.1, "local.rho_min": 0.02, "local.lr_decay": 0.5}),
    ("mesa", {"local.warmup_rounds": 1, "local.reset_state": False, "local.lam": 5.0, "local.local_steps": 6}),
    ("saf", {"local.warmup_rounds": 1, "local.local_epochs": 3.0, "local.saf_epochs": 1, "local.lam": 2.0}),
    ("asam", {}),
])
def test_engines_agree_with_progress(opt, extra):
    """set_progress (serial) and Progress (vectorized) give the same run, rounds after warm-up too
    (the settings make rho_t and the warm-up change test_loss by > 1e-3 over these 3 rounds)."""
    torch.set_default_dtype(torch.float32)
    common = {"algorithm.name": "dfedsam", "local.optimizer": opt, "local.momentum": 0.5, "rounds": 3,
              **extra}
    v = Simulation(small_config(**common, **{"engine.backend": "vectorized"})).run()
    s = Simulation(small_config(**common, **{"engine.backend": "serial"})).run()
    assert_same_history(v, s, tol=1e-6)

