"""MESA: Memory-Efficient Sharpness-Aware training (Du et al., NeurIPS 2022, arXiv:2205.14083).

SAF's variant without a per-sample memory: the reference outputs come from an exponential moving
average of the weights, evaluated on the current batch (one extra forward, no extra backward)::

    L_MESA(w) = CE(f_w(x), y) + lam * tau^2 * KL( softmax(f_v(x) / tau) || softmax(f_w(x) / tau) )
    w <- base_step(w, grad L_MESA(w))
    v <- ema_decay * v + (1 - ema_decay) * w         (v initialised to w)

The KL term is switched on after ``warmup_steps`` steps (the authors' ``kl_start_epoch``).
Defaults from the authors' code (AngusDujw/SAF ``MESA_train.py``, README): lam = 0.8, tau = 5,
ema_decay = 0.9998.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .base import OPTIMIZERS, Objective, Params, Progress, State, check, check_number, loss_and_grad
from .losses import kl_trajectory_loss
from .saf import validate_trajectory
from .sgd import FunctionalSGD
from .shell import WrapperOptimizer


def ema_update(ema: Params, params: Params, decay: Any) -> Params:
    """v <- decay * v + (1 - decay) * w, leaf-wise (pure)."""
    return {k: decay * v + (1 - decay) * params[k].detach() for k, v in ema.items()}


def validate_mesa(ema_decay: Any, warmup_steps: Any) -> tuple[float, int]:
    check("ema_decay", 0 <= check_number("ema_decay", ema_decay) < 1, "in [0, 1)", ema_decay)
    ok = isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool) and warmup_steps >= 0
    check("warmup_steps", ok, "an int >= 0", warmup_steps)
    return float(ema_decay), warmup_steps


@OPTIMIZERS.register("mesa")
class FunctionalMESA(FunctionalSGD):
    """Functional MESA over SGD.

    Args:
        lam: weight of the trajectory loss, >= 0 (default 0.8).
        tau: softmax temperature, > 0 (default 5).
        ema_decay: decay of the weight average in [0, 1) (default 0.9998).
        warmup_steps: local steps without the KL term (default 0).
        momentum, dampening, nesterov, weight_decay: of the base SGD step.

    State: SGD's plus ``ema`` (a copy of the params' structure).
    """

    name = "mesa"

    def __init__(self, *, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, lam: float = 0.8, tau: float = 5.0,
                 ema_decay: float = 0.9998, warmup_steps: int = 0):
        super().__init__(momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay)
        self.lam, self.tau = validate_trajectory(lam, tau)
        self.ema_decay, self.warmup_steps = validate_mesa(ema_decay, warmup_steps)

    def init(self, params: Params, *, num_samples: int = 0, num_classes: int = 0) -> State:
        return {**super().init(params), "ema": {k: v.detach().clone() for k, v in params.items()}}

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        ref = obj.forward(state["ema"]).detach()
        on = (state["step"] >= self.warmup_steps).to(ref.dtype)
        weight = on * self.lam

        def trajectory(logits: Tensor) -> Tensor:
            return weight * kl_trajectory_loss(logits, ref, self.tau, obj.weight)

        grads, loss, _ = loss_and_grad(obj, params, trajectory)
        return grads, state, loss

    def after_descent(self, params: Params, state: State) -> State:
        """The EMA teacher moves towards the new weights."""
        return {**state, "ema": ema_update(state["ema"], params, self.ema_decay)}


class MESA(WrapperOptimizer):
    """MESA over a model's parameters: add :meth:`trajectory_loss` to the loss in the closure.

    Args:
        model: the torch.nn.Module being trained (its parameters are optimized; the EMA
            outputs are computed with ``torch.func.functional_call(model, ema, (inputs,))``).
        base_optimizer: None (dfl.optim.SGD), a torch.optim.Optimizer class or instance
            (an instance must hold exactly ``model.parameters()``).
        lam, tau, ema_decay, warmup_steps: as :class:`FunctionalMESA` (0.8, 5, 0.9998, 0).
        **base_kwargs: lr, momentum, weight_decay, ... of the base optimizer class.

    ``step`` calls the closure once, steps the base optimizer, then updates the EMA; it returns
    what the closure returned. Example::

        opt = MESA(model, lr=0.1, momentum=0.9)
        def closure():
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y) + opt.trajectory_loss(logits, x)
            loss.backward()
            return loss
        opt.step(closure)
    """

    def __init__(self, model: torch.nn.Module, base_optimizer: Any = None, *, lam: float = 0.8,
                 tau: float = 5.0, ema_decay: float = 0.9998, warmup_steps: int = 0,
                 **base_kwargs: Any):
        self.lam, self.tau = validate_trajectory(lam, tau)
        self.ema_decay, self.warmup_steps = validate_mesa(ema_decay, warmup_steps)
        self.model = model
        self.named = dict(model.named_parameters())
        params = None if isinstance(base_optimizer, torch.optim.Optimizer) else list(self.named.values())
        defaults = dict(lam=self.lam, tau=self.tau, ema_decay=self.ema_decay)
        super().__init__(params, base_optimizer, defaults, base_kwargs)
        for p in self.named.values():
            self.state[p]["ema"] = p.detach().clone()
        self.state["mesa"] = {"step": 0}

    def ema(self) -> Params:
        """The EMA weights, keyed like ``model.named_parameters()``."""
        return {n: self.state[p]["ema"] for n, p in self.named.items()}

    def trajectory_loss(self, logits: Tensor, inputs: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """lam * tau^2 * KL(EMA-model outputs || current outputs) on the batch ``inputs``."""
        if self.state["mesa"]["step"] < self.warmup_steps:
            return logits.new_zeros(())
        with torch.no_grad():
            ref = torch.func.functional_call(self.model, self.ema(), (inputs,))
        return self.lam * kl_trajectory_loss(logits, ref, self.tau, weight)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        loss = None if closure is None else self.run_closure(closure, "MESA")
        self.base_optimizer.step()
        new = ema_update(self.ema(), {n: p for n, p in self.named.items()}, self.ema_decay)
        for n, p in self.named.items():
            self.state[p]["ema"] = new[n]
        self.state["mesa"]["step"] += 1
        return loss
