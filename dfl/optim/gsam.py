"""GSAM: Surrogate Gap Guided Sharpness-Aware Minimization (Zhuang et al., ICLR 2022,
arXiv:2203.08065).

SAM's perturbed gradient g_p minimises the perturbed loss; GSAM also lowers the surrogate gap
h(w) = L(w + e) - L(w) by ascending it along the part of g orthogonal to g_p, which leaves the
perturbed loss unchanged to first order. Per step (g = grad L(w), norms over all parameters)::

    rho_t  = rho_min + (rho - rho_min) * (lr - lr_min) / (lr_max - lr_min),  lr_min = 0
    e      = rho_t * g / (||g|| + 1e-12)
    g_p    = grad L(w + e)
    cos    = <g, g_p> / (||g_p|| ||g|| + 1e-12)
    g_orth = g - cos * ||g|| * g_p / (||g_p|| + 1e-12)   # = g - <g, g_p> / ||g_p||^2 g_p
    d      = g_p - alpha * g_orth
    w      <- base_step(w, d)

Reference code: juntang-zhuang/GSAM, ``gsam/gsam.py`` (``perturb_weights``,
``gradient_decompose``, with its eps placement as above) and ``gsam/scheduler.py``
(``ProportionScheduler``: rho_t moves in proportion to the learning rate). lr is this round's
learning rate after the schedule, lr_max the configured peak (``local.lr``) and lr_min = 0, as in
the reference's ``example/train.py`` (cosine lr to 0, ``ProportionScheduler(min_lr=0.0)``).
``rho_min = None`` keeps rho constant. The engines hand lr and lr_max over in
:class:`~dfl.optim.Progress` (the functional ``gradient``'s ``progress``, the shell's
``set_progress``), once per round; without them rho_t = rho (the peak). The reference updates
rho_t every step with its per-step lr; here the lr, hence rho_t, is constant within a round.

alpha defaults to 0.4, the reference's documented default (``example/train.py``, ``--alpha``);
its example pairs it with rho = 2 in its ``adaptive`` (ASAM-like) mode, which is not offered
here (use ASAM); rho defaults to SAM's 0.05.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from .base import OPTIMIZERS
from .core import EPS, Params, Progress, check, check_number, global_norm, tree_dot
from .descent import SGDStep
from .sam import SAM, FunctionalSAM, check_rho, sam_ascent, sam_perturbation


def gsam_direction(g: Params, g_p: Params, alpha: Any) -> Params:
    """d = g_p - alpha * g_orth with g_orth = g - cos * ||g|| * g_p / (||g_p|| + 1e-12) and
    cos = <g, g_p> / (||g_p|| ||g|| + 1e-12) (the reference's ``gradient_decompose``)."""
    norm, norm_p = global_norm(g), global_norm(g_p)
    cosine = tree_dot(g, g_p) / (norm_p * norm + EPS)
    coef = cosine * norm / (norm_p + EPS)
    return {k: gp - alpha * (g[k] - coef * gp) for k, gp in g_p.items()}


def gsam_rho(rho: float, rho_min: Optional[float], progress: Optional[Progress]) -> float:
    """rho_t = rho_min + (rho - rho_min) * lr / lr_max (ProportionScheduler with lr_min = 0).

    rho when ``rho_min`` is None (constant radius) or ``progress`` is None (at the peak).
    """
    if rho_min is None or progress is None or progress.lr_max <= 0:
        return rho
    return rho_min + (rho - rho_min) * progress.lr / progress.lr_max


def check_alpha(alpha: Any) -> float:
    check("alpha", check_number("alpha", alpha) >= 0, ">= 0", alpha)
    return float(alpha)


def check_rho_min(rho_min: Any, rho: float) -> Optional[float]:
    """None (constant rho) or a number in [0, rho] (the reference asserts rho_max >= rho_min)."""
    if rho_min is None:
        return None
    ok = 0 <= check_number("rho_min", rho_min) <= rho
    check("rho_min", ok, f"in [0, rho] = [0, {rho}] (or unset for a constant rho)", rho_min)
    return float(rho_min)


class GSAM(SAM):
    """GSAM wrapping a base optimizer (shell over :func:`gsam_direction` and :func:`gsam_rho`).

    Args:
        params, base_optimizer, **base_kwargs: as :class:`SAM`.
        rho: radius >= 0 at the peak lr (default 0.05).  alpha: surrogate-gap weight >= 0
        (default 0.4).  rho_min: radius at lr 0, in [0, rho] (default None: constant rho).

    rho_t follows the learning rate given by :meth:`set_progress` (the serial engine calls it
    every round); before any call rho_t = rho.

    Example::

        opt = GSAM(model.parameters(), rho=0.05, alpha=0.4, rho_min=0.01, lr=0.1, momentum=0.9)
        opt.set_progress(dfl.optim.Progress(lr=0.05, lr_max=0.1, round=7))   # rho_t = 0.03
        loss = opt.step(closure)    # closure: zero_grad, loss, backward, return loss
    """

    def __init__(self, params: Optional[Iterable], base_optimizer: Any = None, *,
                 rho: float = 0.05, alpha: float = 0.4, rho_min: Optional[float] = None,
                 **base_kwargs: Any):
        self.alpha = check_alpha(alpha)
        self.rho_min = check_rho_min(rho_min, check_rho(rho))
        super().__init__(params, base_optimizer, rho=check_rho(rho), **base_kwargs)
        for group in self.param_groups:
            group.setdefault("alpha", self.alpha)
            group.setdefault("rho_min", self.rho_min)

    def rho_t(self) -> float:
        """This round's radius (:func:`gsam_rho` at the progress last set)."""
        return gsam_rho(self.rho, self.rho_min, self.progress)

    def perturbation(self, params: Params, grads: Params) -> Params:
        return sam_perturbation(grads, self.rho_t())

    def direction(self, g: Params, g_p: Params) -> Params:
        return gsam_direction(g, g_p, self.alpha)


@OPTIMIZERS.register("gsam")
class FunctionalGSAM(FunctionalSAM):
    """Functional GSAM: SAM's rule with the surrogate-gap direction and a radius that follows
    the learning rate.

    Args:
        rho: perturbation radius at the peak learning rate, >= 0 (default 0.05).
        alpha: weight of the surrogate-gap ascent, >= 0 (default 0.4; 0 gives SAM).
        rho_min: radius at learning rate 0, in [0, rho]; rho_t follows the round's learning
            rate linearly in between. None (default): rho_t = rho.
        base: the descent step (default ``SGDStep()``).
    """

    name = "gsam"
    label = "GSAM"
    sam_family = True
    shell = GSAM

    def __init__(self, *, rho: float = 0.05, alpha: float = 0.4, rho_min: Optional[float] = None,
                 base: Optional[SGDStep] = None):
        super().__init__(rho=rho, base=base)
        self.alpha = check_alpha(alpha)
        self.rho_min = check_rho_min(rho_min, self.rho)

    def ascent(self, params: Params, grads: Params, progress: Optional[Progress] = None) -> Params:
        return sam_ascent(params, grads, gsam_rho(self.rho, self.rho_min, progress))

    def direction(self, g: Params, g_p: Params) -> Params:
        return gsam_direction(g, g_p, self.alpha)
