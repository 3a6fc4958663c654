"""SAM: Sharpness-Aware Minimization (Foret et al., ICLR 2021, arXiv:2010.01412).

Update rule (g = grad L(w), all parameters flattened together)::

    e   = rho * g / (||g|| + 1e-12)          # ascent to the worst point of the rho-ball
    g_p = grad L(w + e)                      # gradient at the perturbed weights
    w   <- base_step(w, g_p)                 # SGD (momentum, weight decay at w) along g_p

The reported loss is L(w) at the unperturbed weights. Reference code: davda54/sam.
SAM is a gradient rule over a base step taken as a value (``base``: an SGDStep; the torch.optim
class: any ``base_optimizer``), as optax writes SAM as a combinator over a base optimizer.
ASAM, GSAM and TRAM (asam.py, gsam.py, tram.py) reuse this rule and change ``ascent`` /
``perturbation`` (the radius, ASAM's scaling) or ``direction``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor

from .base import OPTIMIZERS, FunctionalOptimizer
from .core import EPS, Objective, Params, Progress, State, check, check_number, global_norm, loss_and_grad
from .descent import SGDStep
from .shell import WrapperOptimizer


def sam_perturbation(grads: Params, rho: Any) -> Params:
    """e = rho * g / (||g||_2 + 1e-12), the norm taken over all parameters together."""
    scale = rho / (global_norm(grads) + EPS)
    return {k: g * scale for k, g in grads.items()}


def sam_ascent(params: Params, grads: Params, rho: Any) -> Params:
    """w + e with e = :func:`sam_perturbation` (grads, rho), one fused pass per leaf (addcmul)."""
    scale = rho / (global_norm(grads) + EPS)
    return {k: torch.addcmul(w, grads[k], scale) for k, w in params.items()}


def check_rho(rho: Any) -> float:
    check("rho", check_number("rho", rho) >= 0, ">= 0", rho)
    return float(rho)


class SAM(WrapperOptimizer):
    """Sharpness-Aware Minimization wrapping a base optimizer (a thin shell over
    :func:`sam_perturbation`, the same math as ``make("sam")``).

    Args:
        params: iterable of parameters or param groups (None if ``base_optimizer`` is an instance).
        base_optimizer: None (dfl.optim.SGD), a torch.optim.Optimizer class or instance.
        rho: radius >= 0 (default 0.05), one value for all groups (the norm is global).
        **base_kwargs: passed to the base optimizer class: lr, momentum, weight_decay, ...

    ``step(closure)`` calls the closure twice (at w and at w + e) and returns the first loss.

    Example::

        opt = SAM(model.parameters(), rho=0.05, lr=0.1, momentum=0.9)
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        loss = opt.step(closure)
    """

    def __init__(self, params: Optional[Iterable], base_optimizer: Any = None, *,
                 rho: float = 0.05, **base_kwargs: Any):
        self.rho = check_rho(rho)
        super().__init__(params, base_optimizer, dict(rho=self.rho), base_kwargs)

    def perturbation(self, params: Params, grads: Params) -> Params:
        return sam_perturbation(grads, self.rho)

    def direction(self, g: Params, g_p: Params) -> Params:
        return g_p

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Tensor:
        loss = self.run_closure(closure, type(self).__name__)
        ps = self.params_with_grad()
        w, g = self.snapshot(ps)
        e = self.perturbation(w, g)
        for k, p in ps.items():  # climb to w + e
            p.add_(e[k])
        self.run_closure(closure, type(self).__name__)
        g_p = {k: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
               for k, p in ps.items()}
        d = self.direction(g, g_p)
        for k, p in ps.items():  # back to w, descend along d with the base optimizer
            p.copy_(w[k])
            p.grad = d[k]
        self.base_optimizer.step()
        return loss


@OPTIMIZERS.register("sam")
class FunctionalSAM(FunctionalOptimizer):
    """Functional SAM: the gradient at the perturbed weights, descended along by the base step.

    Args:
        rho: radius of the perturbation ball, >= 0 (default 0.05; 0 gives plain SGD).
        base: the descent step (default ``SGDStep()``).

    State: the base step's. Two gradient evaluations per step.
    """

    name = "sam"
    label = "SAM"
    sam_family = True
    shell = SAM

    def __init__(self, *, rho: float = 0.05, base: Optional[SGDStep] = None):
        super().__init__(base=base)
        self.rho = check_rho(rho)

    def perturbation(self, params: Params, grads: Params) -> Params:
        return sam_perturbation(grads, self.rho)

    def ascent(self, params: Params, grads: Params, progress: Optional[Progress] = None) -> Params:
        """The perturbed weights w + e where the second gradient is taken (``progress``: where
        the run stands, for radii that follow it, as GSAM's)."""
        return sam_ascent(params, grads, self.rho)

    def direction(self, g: Params, g_p: Params) -> Params:
        """Descent direction from the unperturbed (g) and perturbed (g_p) gradients."""
        return g_p

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        g, loss, _ = loss_and_grad(obj, params)
        g_p, _, _ = loss_and_grad(obj, self.ascent(params, g, progress))
        return self.direction(g, g_p), state, loss
