"""dfl.flatness: closed forms on quadratics, power iteration == eigvalsh of the full Hessian of a
small network, batched local eigenvalues == per-client loop, the metrics.flatness_every hook."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfl import flatness
from dfl.bank import Layout
from dfl.simulation import Simulation
from tests.conftest import small_config


pytestmark = pytest.mark.usefixtures("float64")


def quadratic(A):
    return [lambda w: 0.5 * w @ A @ w]


def spd(eigs, seed=0):
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigs)) @ q.T


def test_quadratic_max_eig_and_trace():
    eigs = [5.0, 2.0, 1.5, 1.0, 0.5, -0.3, 0.1, 0.0]
    A = spd(eigs)
    w = torch.randn(8)
    gen = flatness.generator(0, 3)
    assert flatness.max_eig(quadratic(A), w, 200, gen) == pytest.approx(5.0, rel=1e-8)
    torch.testing.assert_close(flatness.hvp(quadratic(A), w, torch.ones(8)), A @ torch.ones(8))
    # Hutchinson with Rademacher vectors is exact for every draw on a diagonal A
    D = torch.diag(torch.tensor(eigs))
    assert flatness.hutchinson_trace(quadratic(D), w, 1, gen) == pytest.approx(sum(eigs), abs=1e-12)
    # ... and unbiased on a dense A: the variance of z^T A z is 2 sum_{i != j} A_ij^2
    m = 4000
    sd = math.sqrt(2 * float((A ** 2).sum() - (torch.diag(A) ** 2).sum()) / m)
    assert flatness.hutchinson_trace(quadratic(A), w, m, gen) == pytest.approx(sum(eigs), abs=5 * sd)


def test_quadratic_sharpness_closed_form():
    A = spd([3.0, 1.0, 0.5])
    w = torch.tensor([1.0, -2.0, 0.5])
    g = A @ w
    u = g / g.norm()
    got = flatness.sharpness(quadratic(A), w, [0.0, 0.05, 0.5])
    for rho, value in got.items():
        want = rho * float(g.norm()) + 0.5 * rho ** 2 * float(u @ A @ u)
        assert value == pytest.approx(want, rel=1e-9, abs=1e-12)
    # m-sharpness: one ascent per term, increases summed
    B = spd([2.0, 2.0, 0.1], seed=1)
    per = flatness.sharpness(quadratic(A) + quadratic(B), w, [0.1], per_term=True)[0.1]
    alone = flatness.sharpness(quadratic(A), w, [0.1])[0.1] + flatness.sharpness(quadratic(B), w, [0.1])[0.1]
    assert per == pytest.approx(alone, rel=1e-12)


def small_net(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    return model, Layout.of(dict(model.named_parameters())), x, y


def test_power_iteration_matches_full_hessian_of_a_network():
    model, layout, x, y = small_net(1)  # seed 0 has eigenvalues 0.641 and -0.640: no gap to converge
    w = layout.row(model)
    fs = flatness.loss_terms(model, layout, x, y, batch_size=5)  # 4 terms: 5 + 5 + 5 + 1 samples
    H = torch.autograd.functional.hessian(lambda v: sum(f(v) for f in fs), w)
    eigs = torch.linalg.eigvalsh(H)
    dominant = float(eigs[eigs.abs().argmax()])
    assert flatness.max_eig(fs, w, 300, flatness.generator(1)) == pytest.approx(dominant, rel=1e-6)
    v = torch.randn(len(w))
    torch.testing.assert_close(flatness.hvp(fs, w, v), H @ v)
    one = flatness.loss_terms(model, layout, x, y)
    torch.testing.assert_close(flatness.hessian_operator(one, w)(v), H @ v)
    m = 500
    sd = math.sqrt(2 * float((H ** 2).sum() - (torch.diag(H) ** 2).sum()) / m)
    assert flatness.hutchinson_trace(one, w, m, flatness.generator(2)) == pytest.approx(float(torch.trace(H)), abs=5 * sd)


def test_local_max_eig_equals_per_client_loop():
    model, layout, x, y = small_net()
    w = layout.row(model)
    bank = torch.stack([w, 1.3 * w, w + 0.2, -w, 0.5 * w])
    v0 = torch.randn(bank.shape, generator=torch.Generator().manual_seed(0))
    batched = flatness.local_max_eig(model, layout, bank, x, y, 30, v0=v0, chunk=2)
    fs = flatness.loss_terms(model, layout, x, y)
    loop = [flatness.max_eig(fs, bank[i], 30, v0=v0[i]) for i in range(len(bank))]
    np.testing.assert_allclose(batched, loop, rtol=1e-8)
    # the default start vectors come from the generator, in client order
    again = flatness.local_max_eig(model, layout, bank, x, y, 30, flatness.generator(4), chunk=3)
    default_chunk = flatness.local_max_eig(model, layout, bank, x, y, 30, flatness.generator(4))
    np.testing.assert_allclose(again, default_chunk)


def test_flatness_every_adds_keys_and_is_deterministic():
    torch.set_default_dtype(torch.float32)
    cfg = small_config(**{"rounds": 3, "metrics.flatness_every": 2, "metrics.hessian_iters": 5,
                          "metrics.hessian_samples": 64})
    h1, h2 = Simulation(cfg).run(), Simulation(cfg).run()
    keys = ("hessian_max_eig", "hessian_trace", "sharpness")
    assert [all(k in row for k in keys) for row in h1] == [False, True, False]
    assert all(h1[1][k] == h2[1][k] for k in keys)
    assert h1[1]["hessian_max_eig"] > 0 and h1[1]["hessian_trace"] > 0
    plain = Simulation(small_config()).run()
    assert not any(k in row for row in plain for k in keys)
