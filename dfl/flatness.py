"""Flatness of the training loss around a model: Hessian spectrum and SAM sharpness.

For a flat parameter vector w (one row of the bank) and the mean cross-entropy L(w) on a fixed
set of training samples:

- ``hessian_max_eig``: the dominant eigenvalue of H = grad^2 L(w) (largest in magnitude; at
  trained models the largest, which is positive) by power iteration on Hessian-vector products
  Hv = (v^T grad^2 L)^T (reverse-over-reverse: ``torch.func.vjp`` of ``torch.func.grad``;
  on CPU 1.5-3x faster than forward-over-reverse ``jvp`` of ``grad`` for the ViT and Mixer)::

      v_0 ~ N(0, I) / ||.||;  u = H v_k;  lambda_k = <v_k, u>;  v_{k+1} = u / ||u||

  (Keskar et al. 2017, "On Large-Batch Training ... Sharp Minima"; Yao et al. 2020, PyHessian).
- ``hessian_trace``: Hutchinson's estimator tr(H) ~ (1/m) sum_j z_j^T H z_j with Rademacher z_j
  (Hutchinson 1990; exact in expectation, and exact for every z on a diagonal H).
- ``sharpness`` (SAM's, Foret et al. 2021): L(w + rho g / ||g||) - L(w), g = grad L(w), for any
  list of radii; m-sharpness: the same with one ascent per batch of m samples, averaged.

Everything is deterministic given a ``torch.Generator``; :func:`round_metrics` seeds it from
(cfg.seed, round) and picks the samples from cfg.seed only, so the curve over rounds is measured
on the same samples. No global generator is touched. :func:`local_max_eig` runs the power
iteration for every client's model at once (vmap over chunks of the bank).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vjp, vmap

from .bank import Layout

LossFn = Callable[[Tensor], Tensor]
"""A flat parameter vector (d,) -> a 0-dim loss; a list of them sums to the objective."""

EPS = 1e-12
STREAM, SAMPLES = 11, 12
"""Seed streams of the flatness metrics' random vectors and of their samples."""


def generator(seed: int, round_: int = 0, stream: int = STREAM) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, stream, round) through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), stream, int(round_)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def loss_terms(model: torch.nn.Module, layout: Layout, x: Tensor, y: Tensor,
               batch_size: int = 512) -> list[LossFn]:
    """The mean cross-entropy on (x, y) as a sum of per-batch terms w -> sum_batch CE / len(x)."""
    n = len(x)

    def term(xb: Tensor, yb: Tensor) -> LossFn:
        def f(w: Tensor) -> Tensor:
            params = {k: v[0] for k, v in layout.unflatten(w[None]).items()}
            return F.cross_entropy(functional_call(model, params, (xb,)), yb, reduction="sum") / n
        return f

    return [term(x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, n, batch_size)]


def hvp(fs: Sequence[LossFn], w: Tensor, v: Tensor) -> Tensor:
    """H v for H the Hessian of sum_i f_i at w: the vjp of grad f_i (H is symmetric), one term at
    a time (vmappable over rows of w and v)."""
    out = torch.zeros_like(w)
    for f in fs:
        out = out + vjp(grad(f), w)[1](v)[0]
    return out


def hessian_operator(fs: Sequence[LossFn], w: Tensor) -> Callable[[Tensor], Tensor]:
    """v -> H v at a fixed w; with one term the gradient's graph is built once and reused."""
    if len(fs) != 1:
        return lambda v: hvp(fs, w, v)
    back = vjp(grad(fs[0]), w)[1]
    return lambda v: back(v)[0]


def power_iteration(hv: Callable[[Tensor], Tensor], v0: Tensor, iters: int) -> Tensor:
    """Rayleigh quotient <v_k, H v_k> after ``iters`` steps from v0; v0 (..., d), batched rows ok."""
    v = v0 / (v0.norm(dim=-1, keepdim=True) + EPS)
    eig = torch.zeros(v.shape[:-1], dtype=v.dtype, device=v.device)
    for _ in range(iters):
        u = hv(v)
        eig = (u * v).sum(-1)
        v = u / (u.norm(dim=-1, keepdim=True) + EPS)
    return eig


def max_eig(fs: Sequence[LossFn], w: Tensor, iters: int, gen: Optional[torch.Generator] = None,
            v0: Optional[Tensor] = None) -> float:
    """Dominant Hessian eigenvalue of sum_i f_i at w: ``iters`` power iterations from v0 (or a
    standard normal vector drawn from ``gen``)."""
    w = w.detach()
    if v0 is None:
        v0 = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
    return float(power_iteration(hessian_operator(fs, w), v0, iters))


def hutchinson_trace(fs: Sequence[LossFn], w: Tensor, samples: int,
                     gen: Optional[torch.Generator] = None) -> float:
    """tr(H) ~ (1/samples) sum_j z_j^T H z_j, z_j Rademacher (+-1) drawn from ``gen``."""
    w = w.detach()
    hv = hessian_operator(fs, w)
    total = 0.0
    for _ in range(samples):
        z = (torch.randint(0, 2, w.shape, generator=gen) * 2 - 1).to(w.dtype).to(w.device)
        total += float((z * hv(z)).sum())
    return total / samples


def sharpness(fs: Sequence[LossFn], w: Tensor, rhos: Sequence[float],
              per_term: bool = False) -> dict[float, float]:
    """{rho: L(w + rho g / ||g||) - L(w)} for every radius (SAM's first-order worst case).

    With ``per_term`` each f_i takes its own ascent step along its own gradient and the
    increases are summed: m-sharpness when the terms are batches of m samples
    (``loss_terms(..., batch_size=m)``), since the terms are weighted by batch size.
    """
    w = w.detach()
    groups = [list(fs)] if not per_term else [[f] for f in fs]
    out = {float(r): 0.0 for r in rhos}
    with torch.no_grad():
        for group in groups:
            g = sum(grad(f)(w) for f in group)
            base = sum(float(f(w)) for f in group)
            step = g / (g.norm() + EPS)
            for r in out:
                out[r] += sum(float(f(w + r * step)) for f in group) - base
    return out


def local_max_eig(model: torch.nn.Module, layout: Layout, bank: Tensor, x: Tensor, y: Tensor,
                  iters: int, gen: Optional[torch.Generator] = None, chunk: int = 16,
                  batch_size: int = 512, v0: Optional[Tensor] = None) -> np.ndarray:
    """Dominant Hessian eigenvalue of every client's model (rows of ``bank``) on the same (x, y),
    by power iteration batched with vmap over chunks of ``chunk`` clients.

    v0 (n, d) gives the start vectors (default: standard normal rows drawn from ``gen``, in
    client order); the result equals :func:`max_eig` per client with the same start vector.
    """
    bank = bank.detach()
    if v0 is None:
        v0 = torch.randn(bank.shape, generator=gen, dtype=bank.dtype).to(bank.device)
    fs = loss_terms(model, layout, x, y, batch_size)
    batched_hvp = vmap(lambda w, v: hvp(fs, w, v))
    out = []
    for s in range(0, bank.shape[0], chunk):
        W = bank[s:s + chunk]
        out.append(power_iteration(lambda V, W=W: batched_hvp(W, V), v0[s:s + chunk], iters))
    return torch.cat(out).double().cpu().numpy()


def sample(pool: Tensor, count: int, gen: torch.Generator) -> Tensor:
    """``count`` distinct entries of ``pool`` (all when it is smaller), chosen with ``gen``."""
    perm = torch.randperm(len(pool), generator=gen)[:count]
    return pool[perm.to(pool.device)]


def round_metrics(model: torch.nn.Module, layout: Layout, row: Tensor, fed: Any, cfg: Any,
                  round_: int) -> dict[str, float]:
    """hessian_max_eig, hessian_trace and sharpness (at local.rho, else 0.05) of one flat model
    ``row`` on cfg.metrics.hessian_samples training samples (chosen from cfg.seed), with
    cfg.metrics.hessian_iters power iterations and Hutchinson samples (seeded from the round)."""
    m = cfg.metrics
    pool = torch.cat([torch.as_tensor(p, dtype=torch.int64) for p in fed.client_train])
    idx = sample(pool, m.hessian_samples, generator(cfg.seed, 0, SAMPLES)).to(fed.x_train.device)
    x, y = fed.x_train[idx].to(row.device), fed.y_train[idx].to(row.device)
    fs = loss_terms(model, layout, x, y)
    gen = generator(cfg.seed, round_)
    rho = cfg.local.rho if cfg.local.rho is not None else 0.05
    return {"hessian_max_eig": max_eig(fs, row, m.hessian_iters, gen),
            "hessian_trace": hutchinson_trace(fs, row, m.hessian_iters, gen),
            "sharpness": sharpness(fs, row, [rho])[float(rho)]}


__all__ = ["generator", "loss_terms", "hvp", "hessian_operator", "power_iteration", "max_eig",
           "hutchinson_trace", "sharpness", "local_max_eig", "round_metrics"]
