"""The descent step every local optimizer ends with: SGD with momentum, dampening, Nesterov and
weight decay, exactly as ``torch.optim.SGD``.

Update rule (per parameter w, direction g, step t, learning rate lr)::

    g   <- g + weight_decay * w
    b_t <- g                                    if t = 0
    b_t <- momentum * b_{t-1} + (1 - dampening) * g   otherwise     (only when momentum != 0)
    d   <- g + momentum * b_t  if nesterov  else  b_t               (d = g when momentum = 0)
    w   <- w - lr * d

:class:`SGDStep` holds the four hyperparameters and is the value a functional optimizer takes as
its ``base`` (SAM = SAM's gradient rule over an SGDStep, as optax's SAM is a combinator over a
base optimizer); :func:`sgd_update` is the pure form, :func:`sgd_update_` the in-place form over
stacked clients, and ``dfl.optim.SGD`` the torch.optim shell over the pure form.

Reference: Sutskever et al. 2013, "On the importance of initialization and momentum in deep
learning"; the formulation follows torch.optim.SGD.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import torch
from torch import Tensor

from .core import Params, State, check, check_number


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


@dataclasses.dataclass(frozen=True)
class SGDStep:
    """The SGD descent step of a functional optimizer, as a value (validated on construction).

    Args:
        momentum: heavy-ball factor in [0, 1) (default 0).
        dampening: dampening of the momentum in [0, 1] (default 0).
        nesterov: Nesterov momentum (needs momentum > 0, dampening = 0).
        weight_decay: L2 factor added to the direction (default 0).

    State: ``{"momentum_buffer": {name: Tensor} (empty when momentum = 0), "step": int64 0-dim}``;
    a method adds its own keys beside these two.

    >>> SGDStep(momentum=0.9)
    SGDStep(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0)
    """

    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        validate_sgd(self.momentum, self.dampening, self.nesterov, self.weight_decay)
        for name in ("momentum", "dampening", "weight_decay"):  # plain floats: step() may branch on them
            object.__setattr__(self, name, float(getattr(self, name)))

    def hyperparameters(self) -> dict[str, Any]:
        """The four values by name (the keyword arguments of :func:`sgd_update`)."""
        return dataclasses.asdict(self)

    def init(self, params: Params) -> State:
        """Zero momentum buffers (none when momentum = 0) and a step count of 0."""
        bufs = {k: torch.zeros_like(v) for k, v in params.items()} if self.momentum != 0 else {}
        step = torch.zeros((), dtype=torch.int64, device=next(iter(params.values())).device)
        return {"momentum_buffer": bufs, "step": step}

    def descend(self, params: Params, grads: Params, state: State, lr: Any) -> tuple[Params, State]:
        """The step along ``grads``; returns new params and a new state (other keys kept)."""
        new_params, bufs = sgd_update(params, grads, state["momentum_buffer"], lr=lr,
                                      first=state["step"] == 0, **self.hyperparameters())
        return new_params, {**state, "momentum_buffer": bufs, "step": state["step"] + 1}

    def descend_(self, params: Params, grads: Params, state: State, lr: float,
                 mask: Optional[Tensor] = None) -> State:
        """:meth:`descend` in place over stacked clients ((c, *shape) tensors, (c,) step counts):
        updates ``params`` and the momentum buffers, consumes ``grads``, returns the state with
        the step counts of the clients in ``mask`` (None: all) advanced. See :func:`sgd_update_`."""
        step = state["step"]
        sgd_update_(params, grads, state["momentum_buffer"], lr=lr, first=step == 0, mask=mask,
                    **self.hyperparameters())
        return {**state, "step": step + (1 if mask is None else mask.to(step.dtype))}
