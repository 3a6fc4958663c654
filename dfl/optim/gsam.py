"""GSAM: Surrogate Gap Guided Sharpness-Aware Minimization (Zhuang et al., ICLR 2022,
arXiv:2203.08065).

SAM's perturbed gradient g_p minimises the perturbed loss; GSAM also lowers the surrogate gap
h(w) = L(w + e) - L(w) by ascending it along the part of g orthogonal to g_p, which leaves the
perturbed loss unchanged to first order::

    e      = rho * g / (||g|| + 1e-12)
    g_p    = grad L(w + e)
    g_orth = g - (<g, g_p> / (||g_p||^2 + 1e-12)) g_p      # component of g orthogonal to g_p
    d      = g_p - alpha * g_orth
    w      <- base_step(w, d)

Reference code: juntang-zhuang/GSAM (gsam.py ``gradient_decompose``); its example uses
alpha = 0.2, the paper sweeps alpha in [0.01, 0.3]. The rho schedule of the paper is left to the
caller (rho is a constant here).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from .base import EPS, OPTIMIZERS, Params, check, check_number, tree_dot
from .sam import SAM, FunctionalSAM, check_rho


def gsam_direction(g: Params, g_p: Params, alpha: Any) -> Params:
    """d = g_p - alpha * (g - <g, g_p> / (||g_p||^2 + 1e-12) * g_p)."""
    coef = tree_dot(g, g_p) / (tree_dot(g_p, g_p) + EPS)
    return {k: gp - alpha * (g[k] - coef * gp) for k, gp in g_p.items()}


def check_alpha(alpha: Any) -> float:
    check("alpha", check_number("alpha", alpha) >= 0, ">= 0", alpha)
    return float(alpha)


@OPTIMIZERS.register("gsam")
class FunctionalGSAM(FunctionalSAM):
    """Functional GSAM over SGD.

    Args:
        rho: perturbation radius >= 0 (default 0.05).
        alpha: weight of the surrogate-gap ascent, >= 0 (default 0.2; 0 gives SAM).
        momentum, dampening, nesterov, weight_decay: of the base SGD step.
    """

    name = "gsam"

    def __init__(self, *, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, rho: float = 0.05, alpha: float = 0.2):
        super().__init__(momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay, rho=rho)
        self.alpha = check_alpha(alpha)

    def direction(self, g: Params, g_p: Params) -> Params:
        return gsam_direction(g, g_p, self.alpha)


class GSAM(SAM):
    """GSAM wrapping a base optimizer (shell over :func:`gsam_direction`).

    Args:
        params, base_optimizer, **base_kwargs: as :class:`SAM`.
        rho: radius >= 0 (default 0.05).  alpha: surrogate-gap weight >= 0 (default 0.2).

    Example::

        opt = GSAM(model.parameters(), rho=0.05, alpha=0.2, lr=0.1, momentum=0.9)
        loss = opt.step(closure)    # closure: zero_grad, loss, backward, return loss
    """

    def __init__(self, params: Optional[Iterable], base_optimizer: Any = None, *,
                 rho: float = 0.05, alpha: float = 0.2, **base_kwargs: Any):
        self.alpha = check_alpha(alpha)
        super().__init__(params, base_optimizer, rho=check_rho(rho), **base_kwargs)
        for group in self.param_groups:
            group.setdefault("alpha", self.alpha)

    def direction(self, g: Params, g_p: Params) -> Params:
        return gsam_direction(g, g_p, self.alpha)
