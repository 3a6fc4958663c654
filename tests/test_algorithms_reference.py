"""Algorithms against references written independently of dfl's round loop and optimizers.

Each reference is a plain per-client loop as the papers' code writes it (FL-Simulator, DisPFL):
a model copy per client, torch's own ``torch.optim.SGD`` built afresh each round (or kept, for
``local.reset_state = false``), torch's own ``clip_grad_norm_``, SAM's two passes by hand, and
the averaging written out. Only the data (the batches dfl draws) and W are taken from dfl.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfl.simulation import Simulation
from tests.conftest import small_config

ENGINES = ("vectorized", "serial")


def client_batches(sim, i, round_, steps):
    local, glob = sim.client_data.batches(np.array([i]), round_, steps)
    return [(sim.client_data.x[glob[0, k]], sim.client_data.y[glob[0, k]]) for k in range(steps)]


def sam_grad(model, x, y, rho):
    """The gradient at w + rho g/||g|| (SAM's descent direction), grads left on the params."""
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    ps = [p for p in model.parameters()]
    norm = torch.norm(torch.stack([p.grad.norm() for p in ps]))
    eps = [rho * p.grad / (norm + 1e-12) for p in ps]
    with torch.no_grad():
        for p, e in zip(ps, eps):
            p.add_(e)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p, e in zip(ps, eps):
            p.sub_(e)


def reference_run(cfg, sim, *, sam_rho=None, reset=True, clip=0.0, mofedsam_alpha=None):
    """cfg.rounds rounds of the per-client loop; returns the final (n, d) bank.

    Gossip algorithms mix with the run's W; centralized ones average (server_lr = 1)."""
    n, steps = sim.bank.shape[0], int(sim.steps[0])
    models = [copy.deepcopy(sim.model) for _ in range(n)]
    opts = [None] * n
    global_model = copy.deepcopy(sim.model)
    delta = [torch.zeros_like(p) for p in global_model.parameters()]
    for t in range(cfg.rounds):
        lr = cfg.local.lr * cfg.local.lr_decay ** t
        for i, m in enumerate(models):
            if sim.algo.centralized:
                m.load_state_dict(global_model.state_dict())
            if opts[i] is None or reset:
                opts[i] = torch.optim.SGD(m.parameters(), lr=lr, momentum=cfg.local.momentum,
                                          weight_decay=cfg.local.weight_decay)
            for g in opts[i].param_groups:
                g["lr"] = lr
            for x, y in client_batches(sim, i, t, steps):
                if sam_rho is None:
                    opts[i].zero_grad()
                    F.cross_entropy(m(x), y).backward()
                else:
                    sam_grad(m, x, y, sam_rho)
                if mofedsam_alpha is not None:  # alpha g + (1 - alpha) Delta, as FL-Simulator
                    with torch.no_grad():
                        for p, d in zip(m.parameters(), delta):
                            p.grad.mul_(mofedsam_alpha).add_((1 - mofedsam_alpha) * d)
                if clip:
                    torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
                opts[i].step()
        rows = torch.stack([sim.layout.row(m) for m in models])
        if sim.algo.centralized:
            old = sim.layout.row(global_model)
            new = rows.mean(0)
            sim.layout.load_row(global_model, new)
            step_dir = -(new - old) / (steps * lr)
            delta = [v.reshape(p.shape) for v, p in zip(
                torch.split(step_dir, [p.numel() for p in global_model.parameters()]), global_model.parameters())]
            rows = new.expand(n, -1)
        else:
            W, _, _ = sim.mixing(t)
            W = W.to_dense() if W.is_sparse or W.layout != torch.strided else W
            for _ in range(cfg.algorithm.gossip_steps):
                rows = W.to(rows.dtype) @ rows
        for m, r in zip(models, rows):
            sim.layout.load_row(m, r)
    return rows


def final_bank(cfg):
    sim = Simulation(cfg)
    sim.run()
    return sim.bank


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("reset", [True, False])
def test_dfedavgm_state_reset_matches_a_fresh_torch_optimizer_per_round(engine, reset):
    cfg = small_config(**{"algorithm.name": "dfedavgm", "algorithm.beta": 0.9, "rounds": 3,
                          "local.reset_state": reset, "engine.backend": engine})
    ref = reference_run(cfg.replace(**{"local.momentum": 0.9}), Simulation(cfg), reset=reset)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


def test_reset_state_changes_a_momentum_run():
    # the two reference loops differ: the test above could not pass with the other setting
    base = {"algorithm.name": "dfedavgm", "rounds": 3}
    a = final_bank(small_config(**base, **{"local.reset_state": True}))
    b = final_bank(small_config(**base, **{"local.reset_state": False}))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("engine", ENGINES)
def test_clip_grad_norm_matches_torch_clip(engine):
    # lr 0.5 on a fresh MLP gives gradients of norm ~1-3: a clip at 0.5 acts on most steps
    cfg = small_config(**{"local.clip_grad_norm": 0.5, "local.lr": 0.5, "engine.backend": engine})
    ref = reference_run(cfg, Simulation(cfg), clip=0.5)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)
    unclipped = final_bank(cfg.replace(**{"local.clip_grad_norm": 0.0}))
    assert (unclipped - ref).abs().max() > 1e-3


@pytest.mark.parametrize("engine", ENGINES)
def test_dfedsam_matches_hand_written_sam(engine):
    cfg = small_config(**{"algorithm.name": "dfedsam", "local.rho": 0.1, "local.clip_grad_norm": 1.0,
                          "engine.backend": engine, "rounds": 2})
    ref = reference_run(cfg, Simulation(cfg), sam_rho=0.1, clip=1.0)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_mofedsam_direction_is_alpha_g_plus_one_minus_alpha_delta(engine):
    # alpha scales the SAM gradient from round 1 (Delta = 0 there), weight decay is not scaled
    cfg = small_config(**{"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 0.3, "local.rho": 0.05,
                          "rounds": 3, "engine.backend": engine, "local.weight_decay": 1e-2})
    ref = reference_run(cfg, Simulation(cfg), sam_rho=0.05, mofedsam_alpha=0.3)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


def test_mofedsam_with_alpha_one_is_fedsam():
    common = {"local.rho": 0.05, "rounds": 3, "local.weight_decay": 1e-2}
    a = final_bank(small_config(**common, **{"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 1.0}))
    b = final_bank(small_config(**common, **{"algorithm.name": "fedsam"}))
    assert torch.allclose(a, b, atol=1e-7)


def test_mofedsam_first_round_by_hand():
    # one client, one step: y1 = y0 - lr (alpha g_SAM(y0) + wd y0), Delta = -(y1 - y0) / lr,
    # round 2's first step descends along alpha g_SAM(y1) + (1 - alpha) Delta + wd y1
    cfg = small_config(**{"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 0.25,
                          "data.num_clients": 1, "local.local_steps": 1, "local.rho": 0.05,
                          "local.weight_decay": 0.1, "local.schedule": "constant", "rounds": 1,
                          "data.holdout_fraction": 0.0})
    sim = Simulation(cfg)
    y0 = sim.bank[0].clone()
    model = copy.deepcopy(sim.model)
    (x, y), = client_batches(sim, 0, 0, 1)
    sam_grad(model, x, y, 0.05)
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    sim.run()
    y1 = y0 - cfg.local.lr * (0.25 * g + 0.1 * y0)
    assert torch.allclose(sim.bank[0], y1, atol=1e-6)
    assert torch.allclose(sim.algo.delta, -(y1 - y0) / cfg.local.lr, atol=1e-6)
