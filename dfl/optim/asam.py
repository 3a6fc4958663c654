"""ASAM: Adaptive Sharpness-Aware Minimization (Kwon et al., ICML 2021, arXiv:2102.11600).

SAM in the coordinates normalised by T_w = |w| + eta (element-wise), so the sharpness measure is
invariant to rescaling of the weights. Per step, with T_w = 1 for the tensors left unscaled::

    n   = || T_w g ||                          # over all parameters together
    e   = rho * T_w^2 g / (n + 1e-16)
    g_p = grad L(w + e)
    w   <- base_step(w, g_p)

As the authors' code (SamsungLabs/ASAM, ``asam.py``, ``ASAM.ascent_step``): T_w applies to the
tensors whose parameter name contains ``"weight"`` (``'weight' in name``: linear and conv
weights, and the scales of norm layers); the others (biases) get T_w = 1 but still count in the
norm n; eps 1e-16 is added to n. Defaults rho = 0.5, eta = 0.01 as there.
``adaptive_bias=True`` applies T_w to every tensor (the paper's definition, names not needed).

The functional form reads the names from the keys of ``params`` (``model.named_parameters()``
names, as the engines use). The torch.optim class needs them too: pass the model or
``model.named_parameters()``; unnamed tensors are all scaled (with a warning).
"""
from __future__ import annotations

import warnings
from typing import Any, Collection, Iterable, Optional

import torch

from .base import OPTIMIZERS
from .core import Params, Progress, check, check_number, global_norm, tree_axpy
from .descent import SGDStep
from .sam import SAM, FunctionalSAM, check_rho

ASAM_EPS = 1e-16
"""Added to the norm n, as the reference (``wgrad_norm = ||T_w g|| + 1e-16``)."""


def is_weight(name: str) -> bool:
    """Whether T_w applies to the parameter ``name`` by default: the reference's ``'weight' in n``."""
    return "weight" in name


def asam_perturbation(params: Params, grads: Params, rho: Any, eta: Any,
                      scaled: Optional[Collection[str]] = None) -> Params:
    """e = rho * T^2 g / (||T g||_2 + 1e-16), T = |w| + eta on the keys in ``scaled`` (None:
    all keys) and T = 1 on the others; the norm is over all parameters."""
    t = {k: w.abs() + eta for k, w in params.items() if scaled is None or k in scaled}
    tg = {k: t[k] * g if k in t else g for k, g in grads.items()}
    scale = rho / (global_norm(tg) + ASAM_EPS)
    return {k: (t[k] * v if k in t else v) * scale for k, v in tg.items()}


def check_eta(eta: Any) -> float:
    check("eta", check_number("eta", eta) >= 0, ">= 0", eta)
    return float(eta)


def check_adaptive_bias(adaptive_bias: Any) -> bool:
    check("adaptive_bias", isinstance(adaptive_bias, bool), "a bool", adaptive_bias)
    return adaptive_bias


def named(params: Any) -> tuple[Any, dict[int, str]]:
    """Split named parameters: a Module, ``(name, tensor)`` pairs, or groups whose ``"params"``
    are such pairs -> (what torch.optim accepts, {id(tensor): name}). Unnamed input is returned
    as is with no names."""
    if isinstance(params, torch.nn.Module):
        params = params.named_parameters()
    if params is None:
        return None, {}
    items = list(params)
    names: dict[int, str] = {}

    def strip(seq: Iterable) -> list:
        out = []
        for item in seq:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                names[id(item[1])] = item[0]
                item = item[1]
            out.append(item)
        return out

    if items and isinstance(items[0], dict):
        return [{**g, "params": strip(g["params"])} for g in items], names
    return strip(items), names


class ASAM(SAM):
    """Adaptive SAM wrapping a base optimizer (shell over :func:`asam_perturbation`).

    Args:
        params: the model, ``model.named_parameters()`` (or groups of such pairs), so that T_w
            goes to the weight tensors only as in the reference; plain tensors are all scaled.
            None if ``base_optimizer`` is an instance (names then come from its groups'
            ``"param_names"`` where torch keeps them).
        base_optimizer, **base_kwargs: as :class:`SAM`.
        rho: radius >= 0 (default 0.5).  eta: T_w offset >= 0 (default 0.01).
        adaptive_bias: T_w on every tensor, not only the weights (default False).

    Example::

        opt = ASAM(model.named_parameters(), rho=0.5, eta=0.01, lr=0.1, momentum=0.9)
        loss = opt.step(closure)    # closure: zero_grad, loss, backward, return loss
    """

    def __init__(self, params: Any, base_optimizer: Any = None, *, rho: float = 0.5,
                 eta: float = 0.01, adaptive_bias: bool = False, **base_kwargs: Any):
        self.eta = check_eta(eta)
        self.adaptive_bias = check_adaptive_bias(adaptive_bias)
        params, names = named(params)
        super().__init__(params, base_optimizer, rho=check_rho(rho), **base_kwargs)
        for group in self.param_groups:
            group.setdefault("eta", self.eta)
            group.setdefault("adaptive_bias", self.adaptive_bias)
            for p, n in zip(group["params"], group.get("param_names", ())):
                names.setdefault(id(p), n)
        # "<group>.<index>" (the keys of params_with_grad) -> parameter name
        self.names_by_key = {f"{gi}.{i}": names[id(p)] for gi, g in enumerate(self.param_groups)
                            for i, p in enumerate(g["params"]) if id(p) in names}
        unnamed = sum(len(g["params"]) for g in self.param_groups) - len(self.names_by_key)
        if unnamed and not self.adaptive_bias:
            warnings.warn(
                f"ASAM: {unnamed} parameter(s) without a name get T_w = |w| + eta; pass the model or "
                "model.named_parameters() to scale the weight tensors only (as SamsungLabs/ASAM), "
                "or adaptive_bias=True to scale all tensors", stacklevel=2)

    def perturbation(self, params: Params, grads: Params) -> Params:
        scaled = None if self.adaptive_bias else [
            k for k in params if k not in self.names_by_key or is_weight(self.names_by_key[k])]
        return asam_perturbation(params, grads, self.rho, self.eta, scaled)


@OPTIMIZERS.register("asam")
class FunctionalASAM(FunctionalSAM):
    """Functional ASAM: SAM's rule in the normalised coordinates; ``params`` keys are the
    parameter names.

    Args:
        rho: radius >= 0 in the normalised coordinates (default 0.5).
        eta: offset of T_w = |w| + eta, >= 0 (default 0.01).
        adaptive_bias: False (default): T_w on the tensors named ``*weight*`` only, T_w = 1 on
            the others (the reference); True: T_w on every tensor.
        base: the descent step (default ``SGDStep()``).
    """

    name = "asam"
    label = "ASAM"
    sam_family = True
    shell = ASAM

    def __init__(self, *, rho: float = 0.5, eta: float = 0.01, adaptive_bias: bool = False,
                 base: Optional[SGDStep] = None):
        super().__init__(rho=rho, base=base)
        self.eta = check_eta(eta)
        self.adaptive_bias = check_adaptive_bias(adaptive_bias)

    def perturbation(self, params: Params, grads: Params) -> Params:
        scaled = None if self.adaptive_bias else [k for k in params if is_weight(k)]
        return asam_perturbation(params, grads, self.rho, self.eta, scaled)

    def ascent(self, params: Params, grads: Params, progress: Optional[Progress] = None) -> Params:
        return tree_axpy(1.0, self.perturbation(params, grads), params)

    def shell_inputs(self, model: torch.nn.Module, *, num_samples: int,
                     num_classes: int) -> tuple[Any, dict[str, Any]]:
        """The parameters with their names: T_w goes to the weight tensors, as here by key."""
        return model.named_parameters(), {}
