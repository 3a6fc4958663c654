"""SGD with momentum, dampening, Nesterov and weight decay, exactly as ``torch.optim.SGD``.

Update rule (per parameter w, gradient g, step t, learning rate lr)::

    g   <- g + weight_decay * w
    b_t <- g                                    if t = 0
    b_t <- momentum * b_{t-1} + (1 - dampening) * g   otherwise     (only when momentum != 0)
    d   <- g + momentum * b_t  if nesterov  else  b_t               (d = g when momentum = 0)
    w   <- w - lr * d

Reference: Sutskever et al. 2013, "On the importance of initialization and momentum in deep
learning"; the formulation follows torch.optim.SGD.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Union

import torch
from torch import Tensor

from .base import (
    OPTIMIZERS,
    FunctionalOptimizer,
    Objective,
    Params,
    Progress,
    State,
    check,
    check_lr,
    check_number,
    loss_and_grad,
)


def validate_sgd(momentum: Any, dampening: Any, nesterov: Any, weight_decay: Any) -> None:
    """Reject bad SGD hyperparameters with ConfigError naming the parameter and the value."""
    check("momentum", 0 <= check_number("momentum", momentum) < 1, "in [0, 1)", momentum)
    check("dampening", 0 <= check_number("dampening", dampening) <= 1, "in [0, 1]", dampening)
    check("weight_decay", check_number("weight_decay", weight_decay) >= 0, ">= 0", weight_decay)
    check("nesterov", isinstance(nesterov, bool), "a bool", nesterov)
    if nesterov:
        check("nesterov", momentum > 0 and dampening == 0,
              "False unless momentum > 0 and dampening = 0", nesterov)


def sgd_update(
    params: Params,
    grads: Params,
    bufs: Params,
    *,
    lr: Any,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    first: Union[bool, Tensor] = False,
) -> tuple[Params, Params]:
    """One SGD step on dicts of tensors (pure: returns new tensors, mutates nothing).

    Args:
        params, grads: dicts with the same keys.
        bufs: momentum buffers (same keys; ignored and returned empty when momentum = 0).
        lr: python float or 0-dim tensor.
        first: True on the first step (the buffer is then initialised to the gradient);
            a python bool or a 0-dim bool tensor (vmappable: selected with torch.where).

    Returns:
        (new params, new momentum buffers).
    """
    new_params: Params = {}
    new_bufs: Params = {}
    for k, w in params.items():
        d = grads[k]
        if weight_decay != 0:
            d = torch.add(d, w, alpha=weight_decay)  # one fused pass: g + wd * w
        if momentum != 0:
            b = torch.add(momentum * bufs[k], d, alpha=1 - dampening)
            if isinstance(first, Tensor):
                b = torch.where(first, d, b)
            elif first:
                b = d
            new_bufs[k] = b
            d = torch.add(d, b, alpha=momentum) if nesterov else b
        new_params[k] = torch.add(w, d, alpha=-lr) if isinstance(lr, (int, float)) else w - lr * d
    return new_params, new_bufs


def sgd_update_(
    params: Params,
    grads: Params,
    bufs: Params,
    *,
    lr: float,
    first: Tensor,
    mask: Optional[Tensor] = None,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> None:
    """:func:`sgd_update` in place, over stacked clients: every tensor is (c, *shape).

    The same arithmetic, operation for operation, as the pure form (equal results bit for bit),
    without allocating the new weights: the vectorized engine's hot path, where the weights are
    views of the parameter bank and each pass over them is memory-bound.

    Args:
        params: (c, *shape) weights, updated in place.
        grads: (c, *shape) directions; consumed (overwritten with the step taken).
        bufs: momentum buffers, updated in place (ignored when momentum = 0).
        lr: python float.
        first: (c,) bool, True for the clients whose first step this is.
        mask: (c,) bool, the clients that step (None: all); the others keep weights and buffers.
    """
    all_first, no_first = bool(first.all()), not bool(first.any())
    for k, w in params.items():
        shape = (-1,) + (1,) * (w.dim() - 1)
        d = grads[k]
        if weight_decay != 0:
            d.add_(w, alpha=weight_decay)
        if momentum != 0:
            b = bufs[k]
            if all_first:
                new_b = d
            elif no_first and mask is None:
                new_b = b.mul_(momentum).add_(d, alpha=1 - dampening)
            else:
                new_b = torch.add(momentum * b, d, alpha=1 - dampening)
                if not no_first:
                    new_b = torch.where(first.view(shape), d, new_b)
            if new_b is not b:
                b.copy_(new_b if mask is None else torch.where(mask.view(shape), new_b, b))
            d = d.add_(new_b, alpha=momentum) if nesterov else new_b
        if mask is None:
            w.add_(d, alpha=-lr)
        else:
            w.copy_(torch.where(mask.view(shape), torch.add(w, d, alpha=-lr), w))


@OPTIMIZERS.register("sgd")
class FunctionalSGD(FunctionalOptimizer):
    """Functional SGD; the base of every other functional optimizer (their descent step).

    Args:
        momentum: heavy-ball factor in [0, 1) (default 0).
        dampening: dampening of the momentum in [0, 1] (default 0).
        nesterov: Nesterov momentum (needs momentum > 0, dampening = 0).
        weight_decay: L2 factor added to the gradient (default 0).

    State: ``{"momentum_buffer": {name: Tensor} (empty when momentum = 0), "step": int64 0-dim}``.
    """

    name = "sgd"
    label = "SGD"
    sam_family = False

    def __init__(self, *, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        validate_sgd(momentum, dampening, nesterov, weight_decay)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = nesterov
        self.weight_decay = float(weight_decay)

    def sgd_hparams(self) -> dict[str, Any]:
        return dict(momentum=self.momentum, dampening=self.dampening,
                    nesterov=self.nesterov, weight_decay=self.weight_decay)

    def init(self, params: Params, *, num_samples: int = 0, num_classes: int = 0) -> State:
        bufs = {k: torch.zeros_like(v) for k, v in params.items()} if self.momentum != 0 else {}
        step = torch.zeros((), dtype=torch.int64, device=next(iter(params.values())).device)
        return {"momentum_buffer": bufs, "step": step}

    def descend(self, params: Params, grads: Params, state: State, lr: Any) -> tuple[Params, State]:
        """The SGD step along ``grads``; returns new params and a new state (other keys kept)."""
        new_params, bufs = sgd_update(
            params, grads, state["momentum_buffer"], lr=lr, first=state["step"] == 0,
            **self.sgd_hparams())
        return new_params, {**state, "momentum_buffer": bufs, "step": state["step"] + 1}

    def descend_(self, params: Params, grads: Params, state: State, lr: float,
                 mask: Optional[Tensor] = None) -> State:
        """:meth:`descend` in place over stacked clients ((c, *shape) tensors, (c,) step counts):
        updates ``params`` and the momentum buffers, consumes ``grads``, returns the state with
        the step counts of the clients in ``mask`` (None: all) advanced. See :func:`sgd_update_`."""
        step = state["step"]
        sgd_update_(params, grads, state["momentum_buffer"], lr=lr, first=step == 0, mask=mask,
                    **self.sgd_hparams())
        return {**state, "step": step + (1 if mask is None else mask.to(step.dtype))}

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        """Everything of a step before the SGD descent: (direction to descend along, state updated
        by what the gradient evaluations saw, loss at ``params``). SAM and the others override it."""
        grads, loss, _ = loss_and_grad(obj, params)
        return grads, state, loss

    def after_descent(self, params: Params, state: State) -> State:
        """State updates that read the new weights (MESA's EMA); none for SGD."""
        return state

    def step(self, params: Params, state: State, obj: Objective, lr: Any,
             progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        """gradient, then descend, then after_descent (pure: returns new tensors)."""
        grads, state, loss = self.gradient(params, state, obj, progress)
        params, state = self.descend(params, grads, state, lr)
        return params, self.after_descent(params, state), loss


class SGD(torch.optim.Optimizer):
    """Stochastic gradient descent, a thin shell over :func:`sgd_update` (same math as the
    functional form and as ``torch.optim.SGD``).

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate > 0 (default 1e-3, as torch).
        momentum, dampening, weight_decay, nesterov: see the module docstring.
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
