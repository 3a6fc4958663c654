"""SGD: the plain gradient and the descent step (dfl/optim/descent.py), as a functional optimizer
and as a torch.optim class.

The functional form is :class:`~dfl.optim.base.FunctionalOptimizer` with its defaults (the
gradient at w, the base step along it); ``make("sgd", momentum=0.9)`` is
``FunctionalSGD(base=SGDStep(momentum=0.9))``. The torch.optim class is ``torch.optim.SGD``'s rule
over the same pure update, plus the clipping and the correction term the engines use.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from .base import OPTIMIZERS, FunctionalOptimizer
from .core import check, check_lr, check_number
from .descent import sgd_update, validate_sgd
from .shell import ShellHooks


class SGD(ShellHooks, torch.optim.Optimizer):
    """Stochastic gradient descent, a thin shell over :func:`~dfl.optim.descent.sgd_update` (same
    math as the functional form and as ``torch.optim.SGD``); the base optimizer of every other shell.

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate > 0 (default 1e-3, as torch).
        momentum, dampening, weight_decay, nesterov: see :class:`~dfl.optim.descent.SGDStep`.
        clip_grad_norm: > 0 clips the gradients to this global L2 norm before the update
            (``torch.nn.utils.clip_grad_norm_``); 0 = off.

    Example::

        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 clip_grad_norm: float = 0.0):
        check_lr(lr)
        validate_sgd(momentum, dampening, nesterov, weight_decay)
        check("clip_grad_norm", check_number("clip_grad_norm", clip_grad_norm) >= 0, ">= 0 (0 = off)",
              clip_grad_norm)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)
        self.clip_grad_norm = float(clip_grad_norm)
        #: (grad_scale, {param: direction}): the step descends along grad_scale * grad + direction
        #: (MoFedSAM's client momentum, set by the engine for a round); None = the gradient.
        self.correction: Optional[tuple[float, dict[Tensor, Tensor]]] = None

    @torch.no_grad()
    def step(self, closure: Optional[Any] = None) -> Optional[Tensor]:
        """One step; ``closure`` (optional) clears grads, computes the loss, backward, returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.correction is not None:
            scale, dirs = self.correction
            for p in dirs:
                if p.grad is not None:
                    p.grad.mul_(scale).add_(dirs[p])
        if self.clip_grad_norm:  # the direction, before weight decay and momentum (as DisPFL)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.param_groups for p in g["params"] if p.grad is not None], self.clip_grad_norm)
        for group in self.param_groups:
            hp = {k: group[k] for k in ("momentum", "dampening", "nesterov", "weight_decay")}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                first = "momentum_buffer" not in state
                buf = state.get("momentum_buffer", p)  # p: placeholder, unused when first
                new, bufs = sgd_update({"w": p}, {"w": p.grad}, {"w": buf},
                                       lr=group["lr"], first=first, **hp)
                p.copy_(new["w"])
                if "w" in bufs:  # clone on the first step: the buffer may alias p.grad
                    state["momentum_buffer"] = bufs["w"].clone() if first else bufs["w"]
        return loss


@OPTIMIZERS.register("sgd")
class FunctionalSGD(FunctionalOptimizer):
    """Functional SGD: the base step along the plain gradient (every default of the base class).

    Args:
        base: the descent step (default ``SGDStep()``).

    State: the base step's (``momentum_buffer``, ``step``).
    """

    name = "sgd"
    label = "SGD"
    sam_family = False
    shell = SGD
