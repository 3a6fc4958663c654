"""ASAM: Adaptive Sharpness-Aware Minimization (Kwon et al., ICML 2021, arXiv:2102.11600).

SAM in the coordinates normalised by T_w = |w| + eta (element-wise), so the sharpness measure is
invariant to rescaling of the weights::

    e   = rho * T_w^2 g / (||T_w g|| + 1e-12)
    g_p = grad L(w + e)
    w   <- base_step(w, g_p)

Defaults follow the authors' code (SamsungLabs/ASAM): rho = 0.5, eta = 0.01. Difference: the
authors apply T_w only to tensors whose name contains "weight" (biases get T_w = 1); here T_w
applies to every parameter, as in the paper's definition, so the math needs no parameter names.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from .base import EPS, OPTIMIZERS, Params, check, check_number, global_norm, tree_axpy
from .sam import SAM, FunctionalSAM, check_rho


def asam_perturbation(params: Params, grads: Params, rho: Any, eta: Any) -> Params:
    """e = rho * T_w^2 g / (||T_w g||_2 + 1e-12) with T_w = |w| + eta (norm over all params)."""
    t = {k: w.abs() + eta for k, w in params.items()}
    tg = {k: t[k] * g for k, g in grads.items()}
    scale = rho / (global_norm(tg) + EPS)
    return {k: t[k] * v * scale for k, v in tg.items()}


def check_eta(eta: Any) -> float:
    check("eta", check_number("eta", eta) >= 0, ">= 0", eta)
    return float(eta)


@OPTIMIZERS.register("asam")
class FunctionalASAM(FunctionalSAM):
    """Functional ASAM over SGD.

    Args:
        rho: radius >= 0 in the normalised coordinates (default 0.5).
        eta: offset of T_w = |w| + eta, >= 0 (default 0.01).
        momentum, dampening, nesterov, weight_decay: of the base SGD step.
    """

    name = "asam"

    def __init__(self, *, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, rho: float = 0.5, eta: float = 0.01):
        super().__init__(momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay, rho=rho)
        self.eta = check_eta(eta)

    def perturbation(self, params: Params, grads: Params) -> Params:
        return asam_perturbation(params, grads, self.rho, self.eta)

    def ascent(self, params: Params, grads: Params) -> Params:
        return tree_axpy(1.0, self.perturbation(params, grads), params)


class ASAM(SAM):
    """Adaptive SAM wrapping a base optimizer (shell over :func:`asam_perturbation`).

    Args:
        params, base_optimizer, **base_kwargs: as :class:`SAM`.
        rho: radius >= 0 (default 0.5).  eta: T_w offset >= 0 (default 0.01).

    Example::

        opt = ASAM(model.parameters(), rho=0.5, eta=0.01, lr=0.1, momentum=0.9)
        loss = opt.step(closure)    # closure: zero_grad, loss, backward, return loss
    """

    def __init__(self, params: Optional[Iterable], base_optimizer: Any = None, *,
                 rho: float = 0.5, eta: float = 0.01, **base_kwargs: Any):
        self.eta = check_eta(eta)
        super().__init__(params, base_optimizer, rho=check_rho(rho), **base_kwargs)
        for group in self.param_groups:
            group.setdefault("eta", self.eta)

    def perturbation(self, params: Params, grads: Params) -> Params:
        return asam_perturbation(params, grads, self.rho, self.eta)
