"""What the torch.optim classes share: the hooks the serial engine calls, and the shell of the
classes that wrap a base optimizer (SAM family, SAF, MESA).

Only plumbing lives here (the hooks' defaults, base optimizer resolution, gathering params and
grads into dicts, state_dict); the math is in the pure helpers of each method's module.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .core import Params, Progress


class ShellHooks:
    """The calls the serial engine makes on a client's torch.optim optimizer besides ``step``,
    with the defaults of plain SGD; a method's shell overrides what it uses."""

    #: Where the run stands, set by :meth:`set_progress`; None: at the peak lr, in round 0.
    progress: Optional[Progress] = None

    def set_progress(self, progress: Optional[Progress]) -> None:
        """Where the run stands (this round's lr, the peak lr, the round), for the methods whose
        step depends on it (GSAM's rho_t, SAF's and MESA's warm-up rounds); the serial engine
        calls it at the start of every round."""
        self.progress = progress

    def begin_round(self) -> None:
        """Called at the start of every round, after the round-start weights are loaded (MESA's
        teacher and TRAM's reference move there); nothing by default."""

    def loss_term(self, logits: Tensor, inputs: Tensor, index: Optional[Tensor] = None) -> Tensor | float:
        """What the closure adds to the cross-entropy of the batch ``inputs`` (sample ids
        ``index``) with outputs ``logits``: SAF's and MESA's trajectory loss; TRAM measures its
        radius there and adds 0. 0 by default."""
        return 0.0

    def descent(self) -> torch.optim.Optimizer:
        """The optimizer that takes the descent step (the engine sets its ``correction``)."""
        return self


class WrapperOptimizer(ShellHooks, torch.optim.Optimizer):
    """A torch.optim.Optimizer that owns a base optimizer and shares its param groups.

    Args:
        params: iterable of parameters or param groups; must be None when ``base_optimizer``
            is an optimizer instance (its param groups are used).
        base_optimizer: None (``dfl.optim.SGD``), a torch.optim.Optimizer subclass (built with
            ``base_kwargs``), or an already built instance.
        defaults: this wrapper's own hyperparameters (stored in every param group).
        base_kwargs: keyword arguments of the base optimizer class (lr, momentum, ...).
    """

    def __init__(self, params: Optional[Iterable], base_optimizer: Any,
                 defaults: dict[str, Any], base_kwargs: dict[str, Any]):
        from .sgd import SGD

        if base_optimizer is None:
            base_optimizer = SGD
        if isinstance(base_optimizer, torch.optim.Optimizer):
            if params is not None or base_kwargs:
                raise ConfigError(
                    "base_optimizer: an optimizer instance already holds its parameters and "
                    "hyperparameters; pass params=None and no base keyword arguments "
                    f"(got params={'set' if params is not None else None}, "
                    f"kwargs={sorted(base_kwargs)})")
            super().__init__(base_optimizer.param_groups, defaults)
            self.base_optimizer = base_optimizer
        elif isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer):
            if params is None:
                raise ConfigError("params: required when base_optimizer is a class, got None")
            super().__init__(params, defaults)
            try:
                self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
            except TypeError as err:  # unknown keyword of the base class
                raise ConfigError(f"base optimizer {base_optimizer.__name__}: {err}") from None
        else:
            raise ConfigError(
                "base_optimizer: must be None, a torch.optim.Optimizer subclass or instance, "
                f"got {base_optimizer!r}")
        self.param_groups = self.base_optimizer.param_groups

    def descent(self) -> torch.optim.Optimizer:
        return self.base_optimizer

    def params_with_grad(self) -> dict[str, Tensor]:
        """All parameters that have a gradient, keyed ``"<group>.<index>"`` (stable order)."""
        return {
            f"{gi}.{i}": p
            for gi, group in enumerate(self.param_groups)
            for i, p in enumerate(group["params"])
            if p.grad is not None
        }

    @staticmethod
    def snapshot(ps: dict[str, Tensor]) -> tuple[Params, Params]:
        """Detached copies of the parameters and of their gradients."""
        return ({k: p.detach().clone() for k, p in ps.items()},
                {k: p.grad.detach().clone() for k, p in ps.items()})

    @staticmethod
    def run_closure(closure: Optional[Callable[[], Tensor]], who: str) -> Tensor:
        if closure is None:
            raise TypeError(
                f"{who}.step needs a closure that clears the grads, computes the loss, calls "
                "backward and returns the loss: opt.step(lambda: ...)")
        with torch.enable_grad():
            return closure()

    def state_dict(self) -> dict[str, Any]:
        return {"wrapper": super().state_dict(), "base": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["wrapper"])
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
