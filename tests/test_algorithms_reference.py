"""Algorithms against references written independently of dfl's round loop and optimizers.

Each reference is a plain per-client loop as the papers' code writes it (FL-Simulator, DisPFL):
a model copy per client, torch's own ``torch.optim.SGD`` built afresh each round (or kept, for
``local.reset_state = false``), torch's own ``clip_grad_norm_``, SAM's two passes by hand, the
server step and the averaging written out. Only the data (the batches dfl draws, from
``dfl.rng.batch_indices`` over each shard), the participation draws and W are taken from dfl.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfl import rng
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import client_batches

ENGINES = ("vectorized", "serial")


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


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def load_flat(model, row):
    """Copy a flat row into the model's parameters (never views of the row: models stay apart)."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), torch.split(row, [p.numel() for p in model.parameters()])):
            p.copy_(v.reshape(p.shape))


def mixing_dense(sim, t):
    W = sim.mixing(t).operator
    return W.to_dense() if W.is_sparse or W.layout != torch.strided else W


def reference_run(cfg, sim, *, sam_rho=None, reset=True, clip=0.0, mofedsam_alpha=None, dpsgd=False):
    """cfg.rounds rounds of the per-client loop; returns the final (n, d) bank.

    Gossip algorithms mix with the run's W (D-PSGD: mixes the round-start models and adds the
    local update); centralized ones average the active clients and take a server step of
    algorithm.server_lr."""
    n, steps = sim.bank.shape[0], int(sim.steps[0])
    models = [copy.deepcopy(sim.model) for _ in range(n)]
    opts = [None] * n
    global_model = copy.deepcopy(sim.model)
    delta = [torch.zeros_like(p) for p in global_model.parameters()]
    server_lr = cfg.algorithm.server_lr
    for t in range(cfg.rounds):
        lr = cfg.local.lr * cfg.local.lr_decay ** t
        active = rng.participation(cfg.seed, t, n, cfg.algorithm.participation)
        start = torch.stack([flat(m) for m in models])
        for i, m in enumerate(models):
            if sim.algo.centralized:
                m.load_state_dict(global_model.state_dict())
            if not active[i]:
                continue
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
        rows = torch.stack([flat(m) for m in models])
        if sim.algo.centralized:
            old = flat(global_model)
            mean_update = rows[torch.as_tensor(active)].mean(0) - old
            new = old + server_lr * mean_update
            load_flat(global_model, new)
            step_dir = -mean_update / (steps * lr)   # MoFedSAM's Delta: before the server lr
            delta = [v.reshape(p.shape) for v, p in zip(
                torch.split(step_dir, [p.numel() for p in global_model.parameters()]), global_model.parameters())]
            rows = new.expand(n, -1)
        else:
            W = mixing_dense(sim, t).to(rows.dtype)
            mixed = start if dpsgd else rows
            for _ in range(cfg.algorithm.gossip_steps):
                mixed = W @ mixed
            rows = mixed + (rows - start) if dpsgd else mixed
        for m, r in zip(models, rows):
            load_flat(m, r)
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


def test_dfedavgm_beta_is_the_momentum_not_local_momentum():
    # algorithm.beta overrides local.momentum; a wrong beta (here 0.5 in place of 0.9) moves the bank
    cfg = small_config(**{"algorithm.name": "dfedavgm", "algorithm.beta": 0.9, "local.momentum": 0.0,
                          "rounds": 2, "local.local_steps": 5})
    sim = Simulation(cfg)
    got = final_bank(cfg)
    assert torch.allclose(got, reference_run(cfg.replace(**{"local.momentum": 0.9}), sim), atol=1e-6)
    wrong = reference_run(cfg.replace(**{"local.momentum": 0.5}), sim)
    assert (got - wrong).abs().max() > 1e-3


def test_dfedavgm_with_beta_zero_is_dfedavg():
    a = final_bank(small_config(**{"algorithm.name": "dfedavgm", "algorithm.beta": 0.0, "rounds": 3}))
    b = final_bank(small_config(**{"algorithm.name": "dfedavg", "rounds": 3}))
    assert torch.equal(a, b)


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
def test_dfedsam_mgs_mixes_q_times_on_a_time_varying_graph(engine):
    cfg = small_config(**{"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 3, "local.rho": 0.05,
                          "topology.name": "one_peer_exponential", "data.num_clients": 8, "rounds": 3,
                          "local.lr": 0.3, "engine.backend": engine})
    ref = reference_run(cfg, Simulation(cfg), sam_rho=0.05)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_dpsgd_mixes_the_round_start_models_then_adds_the_local_step(engine):
    # x_i <- sum_j W_ij x_j - lr g_i(x_i): the order matters (DFedAvg mixes after the step)
    cfg = small_config(**{"algorithm.name": "dpsgd", "local.lr": 0.5, "local.momentum": 0.5, "rounds": 3,
                          "algorithm.participation": 0.5, "engine.backend": engine})
    sim = Simulation(cfg)
    assert (sim.steps == 1).all()  # local.local_steps = 3 is ignored
    ref = reference_run(cfg, sim, dpsgd=True)
    got = final_bank(cfg)
    assert torch.allclose(got, ref, atol=1e-6, rtol=1e-5)
    assert (got - reference_run(cfg, sim)).abs().max() > 1e-4   # mixing after the step differs


def test_dpsgd_first_round_by_hand():
    cfg = small_config(**{"algorithm.name": "dpsgd", "local.lr": 0.5, "rounds": 1,
                          "local.weight_decay": 0.01})
    sim = Simulation(cfg)
    x0 = sim.bank.clone()
    W = mixing_dense(sim, 0)
    grads = []
    for i in range(x0.shape[0]):
        m = copy.deepcopy(sim.model)
        (x, y), = client_batches(sim, i, 0, 1)
        g = torch.autograd.grad(F.cross_entropy(m(x), y), list(m.parameters()))
        grads.append(torch.cat([v.flatten() for v in g]))
    want = W @ x0 - 0.5 * (torch.stack(grads) + 0.01 * x0)
    sim.run()
    assert torch.allclose(sim.bank, want, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("server_lr,participation", [(1.0, 1.0), (0.5, 0.5), (1.5, 0.34)])
def test_fedavg_server_step_over_the_active_clients(engine, server_lr, participation):
    cfg = small_config(**{"algorithm.name": "fedavg", "algorithm.server_lr": server_lr, "local.lr": 0.3,
                          "algorithm.participation": participation, "rounds": 3, "engine.backend": engine})
    ref = reference_run(cfg, Simulation(cfg))
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_mofedsam_direction_is_alpha_g_plus_one_minus_alpha_delta(engine):
    # alpha scales the SAM gradient from round 1 (Delta = 0 there), weight decay is not scaled
    cfg = small_config(**{"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 0.3, "local.rho": 0.05,
                          "rounds": 3, "engine.backend": engine, "local.weight_decay": 1e-2})
    ref = reference_run(cfg, Simulation(cfg), sam_rho=0.05, mofedsam_alpha=0.3)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_mofedsam_delta_is_taken_before_the_server_lr(engine):
    # half the clients, server_lr 0.5: Delta = -(mean of the active updates) / (K lr), unscaled
    cfg = small_config(**{"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 0.2, "local.rho": 0.05,
                          "algorithm.server_lr": 0.5, "algorithm.participation": 0.5, "local.lr": 0.3,
                          "rounds": 3, "engine.backend": engine})
    ref = reference_run(cfg, Simulation(cfg), sam_rho=0.05, mofedsam_alpha=0.2)
    assert torch.allclose(final_bank(cfg), ref, atol=1e-6, rtol=1e-5)


def test_mofedsam_with_alpha_one_is_fedsam():
    common = {"local.rho": 0.05, "rounds": 3, "local.weight_decay": 1e-2}
    a = final_bank(small_config(**common, **{"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 1.0}))
    b = final_bank(small_config(**common, **{"algorithm.name": "fedsam"}))
    assert torch.allclose(a, b, atol=1e-7)


def test_mofedsam_tends_to_fedsam_as_alpha_tends_to_one():
    common = {"local.rho": 0.05, "rounds": 3, "local.lr": 0.3}
    fedsam = final_bank(small_config(**common, **{"algorithm.name": "fedsam"}))
    gaps = [float((final_bank(small_config(**common, **{"algorithm.name": "mofedsam",
                                                        "algorithm.mofedsam_alpha": a})) - fedsam).abs().max())
            for a in (0.5, 0.9, 0.99)]
    assert gaps[0] > gaps[1] > gaps[2] > 0 and gaps[2] < 0.1 * gaps[0]


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


# ------------------------------------------------------------------ pooled training


def reference_pooled(cfg, fed, model):
    """One model on the union of the shards (concatenated in client order), K SGD steps a round
    on batches of num_clients * batch_size samples (at most the union) drawn as one client's walk."""
    model = copy.deepcopy(model)
    union = torch.cat(list(fed.client_train))
    batch = min(cfg.local.batch_size * len(fed.client_train), len(union))
    for t in range(cfg.rounds):
        lr = cfg.local.lr * cfg.local.lr_decay ** t
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.local.momentum,
                              weight_decay=cfg.local.weight_decay)
        idx = rng.batch_indices(cfg.seed, t, np.array([0]), np.array([len(union)]), cfg.local.local_steps, batch)
        for k in range(cfg.local.local_steps):
            rows = union[idx[0, k]]
            opt.zero_grad()
            F.cross_entropy(model(fed.x_train[rows]), fed.y_train[rows]).backward()
            opt.step()
    return flat(model)


@pytest.mark.parametrize("engine", ENGINES)
def test_pooled_trains_one_model_on_the_union_with_federation_sized_batches(engine):
    cfg = small_config(**{"algorithm.name": "pooled", "local.lr": 0.3, "local.momentum": 0.5, "rounds": 3,
                          "engine.backend": engine})
    sim = Simulation(cfg)
    assert sim.bank.shape[0] == 1 and sim.client_data.batch_size == 6 * 16
    ref = reference_pooled(cfg, sim.fed, sim.model)
    h = sim.run()
    assert torch.allclose(sim.bank[0], ref, atol=1e-6, rtol=1e-5)
    assert h[-1]["comm_mb"] == 0.0 and h[-1]["consensus"] == 0.0


def test_pooled_with_one_client_is_fedavg_with_one_client():
    common = {"data.num_clients": 1, "rounds": 3, "local.lr": 0.3}
    a = final_bank(small_config(**common, **{"algorithm.name": "pooled"}))
    b = final_bank(small_config(**common, **{"algorithm.name": "fedavg"}))
    assert torch.equal(a, b)
