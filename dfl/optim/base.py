"""The functional optimizer: a gradient rule over a descent step, the registry and the factory.

A functional optimizer works on one client with pure methods (no in-place updates, vmappable with
``torch.func.vmap`` over clients)::

    state = opt.init(params, num_samples=N, num_classes=C)
    state = opt.begin_round(params, state)
    params, state, loss = opt.step(params, state, obj, lr, progress)

and ``step`` is three parts the vectorized engine calls apart: ``gradient`` (vmapped over the
clients), ``descend_`` (in place on the stacked clients) and, where ``has_after_descent``,
``after_descent`` (vmapped). :class:`FunctionalOptimizer` declares them all with the defaults of
plain SGD; a method overrides what it changes (SAM: ``gradient``; MESA: ``init``, ``begin_round``,
``gradient``, ``after_descent``) and takes its descent step as a value, ``base``
(:class:`~dfl.optim.descent.SGDStep`), instead of inheriting SGD's keyword arguments.

Adding a method is one file: a subclass registered with ``@OPTIMIZERS.register(name)`` that
declares ``label``, ``sam_family`` and ``shell`` (its torch.optim class), its hyperparameters as
keyword-only constructor arguments with defaults, and ``shell_inputs`` if its torch.optim class
takes more than the parameters. Both engines, :func:`make` and :func:`hyperparameters` then know it.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import Registry
from .core import Objective, Params, Progress, State, check, loss_and_grad
from .descent import SGDStep

OPTIMIZERS: Registry = Registry("optimizer")
"""Name -> functional optimizer class ("sgd", "sam", "asam", "gsam", "saf", "mesa", "tram")."""


class FunctionalOptimizer:
    """A gradient rule over a descent step; the defaults are plain SGD.

    Args:
        base: the descent step (default ``SGDStep()``: no momentum, no weight decay).

    Subclasses add their hyperparameters as keyword-only constructor arguments with defaults,
    validated on construction and stored as plain python values (never tensors) under their own
    names, so ``gradient`` may branch on them and :meth:`hyperparameters` finds them.
    """

    name: ClassVar[str] = "base"
    #: How the method appears in labels ("ASAM": DFedSAM + asam = DFedASAM).
    label: ClassVar[str] = "base"
    #: A sharpness-aware method (trained by dfedsam / fedsam, not dfedavg / fedavg).
    sam_family: ClassVar[bool] = False
    #: The descent step's type: its fields are hyperparameters of every method.
    base_step: ClassVar[type] = SGDStep
    #: The torch.optim form of the method (dfl.optim.SGD, SAM, ...), which the serial engine builds
    #: with :meth:`torch_optimizer`; a subclass of dfl.optim.SGD or of the shells' WrapperOptimizer.
    shell: ClassVar[type]
    #: Whether :meth:`after_descent` does anything (the engines skip the call, a vmap over the
    #: whole state, when it does not).
    has_after_descent: ClassVar[bool] = False

    def __init__(self, *, base: Optional[SGDStep] = None):
        base = self.base_step() if base is None else base
        check("base", isinstance(base, self.base_step), f"a {self.base_step.__name__}", base)
        self.base = base

    # ------------------------------------------------------------ the step, in its parts

    def init(self, params: Params, *, num_samples: int = 0, num_classes: int = 0) -> State:
        """The state at ``params``: the descent step's (momentum buffers, step count) by default.
        ``num_samples`` / ``num_classes`` size per-sample state (SAF's logits memory)."""
        return self.base.init(params)

    def begin_round(self, params: Params, state: State) -> State:
        """Called by the engines at the start of each round with the round-start weights (after
        gossip), also when the state was kept from the last round; identity by default."""
        return state

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        """Everything of a step before the descent: (direction to descend along, state updated by
        what the gradient evaluations saw, loss at ``params``). Default: the plain gradient.
        ``progress``: where the run stands (GSAM's rho_t, the warm-up rounds of SAF and MESA)."""
        grads, loss, _ = loss_and_grad(obj, params)
        return grads, state, loss

    def descend(self, params: Params, grads: Params, state: State, lr: Any) -> tuple[Params, State]:
        """The descent along ``grads`` (pure): the base step's."""
        return self.base.descend(params, grads, state, lr)

    def descend_(self, params: Params, grads: Params, state: State, lr: float,
                 mask: Optional[Tensor] = None) -> State:
        """:meth:`descend` in place over stacked clients (the base step's; see its docstring)."""
        return self.base.descend_(params, grads, state, lr, mask)

    def after_descent(self, params: Params, state: State) -> State:
        """State updates that read the new weights (MESA's EMA); identity by default. A class that
        overrides it sets ``has_after_descent = True``."""
        return state

    def step(self, params: Params, state: State, obj: Objective, lr: Any,
             progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        """gradient, then descend, then after_descent (pure: returns new tensors)."""
        grads, state, loss = self.gradient(params, state, obj, progress)
        params, state = self.descend(params, grads, state, lr)
        return params, self.after_descent(params, state), loss

    # ------------------------------------------------------------ hyperparameters and the shell

    @classmethod
    def own_hyperparameters(cls) -> dict[str, Any]:
        """Names and defaults of the method's own hyperparameters (its keyword-only constructor
        arguments but ``base``)."""
        sig = inspect.signature(cls.__init__)
        return {n: p.default for n, p in sig.parameters.items()
                if n != "base" and p.kind is inspect.Parameter.KEYWORD_ONLY}

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Names and defaults of all hyperparameters: the descent step's, then the method's own."""
        step = {f.name: f.default for f in dataclasses.fields(cls.base_step)}
        return {**step, **cls.own_hyperparameters()}

    @classmethod
    def from_hyperparameters(cls, **hparams: Any) -> "FunctionalOptimizer":
        """Build from one flat mapping (a config's keys): the descent step's keys go to ``base``."""
        step_keys = {f.name for f in dataclasses.fields(cls.base_step)}
        base = cls.base_step(**{k: v for k, v in hparams.items() if k in step_keys})
        return cls(base=base, **{k: v for k, v in hparams.items() if k not in step_keys})

    def hyperparameter_values(self) -> dict[str, Any]:
        """This instance's values of :meth:`hyperparameters`, by name."""
        step = {f.name: getattr(self.base, f.name) for f in dataclasses.fields(self.base)}
        return {**step, **{k: getattr(self, k) for k in self.own_hyperparameters()}}

    def shell_inputs(self, model: torch.nn.Module, *, num_samples: int,
                     num_classes: int) -> tuple[Any, dict[str, Any]]:
        """What :attr:`shell`'s constructor takes besides the hyperparameters: its first argument
        and extra keywords. Default: ``model.parameters()`` and none."""
        return model.parameters(), {}

    def torch_optimizer(self, model: torch.nn.Module, *, lr: float, num_samples: int = 0,
                        num_classes: int = 0, clip_grad_norm: float = 0.0) -> torch.optim.Optimizer:
        """The torch.optim form of this optimizer over ``model``, with the same hyperparameters
        (the serial engine's per-client optimizer). ``clip_grad_norm`` goes to the descent step
        (dfl.optim.SGD, the base of every shell): the direction it descends along is clipped, as
        the vectorized engine clips its directions."""
        first, extra = self.shell_inputs(model, num_samples=num_samples, num_classes=num_classes)
        return self.shell(first, lr=lr, clip_grad_norm=clip_grad_norm, **extra,
                          **self.hyperparameter_values())

    def __repr__(self) -> str:
        own = "".join(f"{k}={getattr(self, k)!r}, " for k in self.own_hyperparameters())
        return f"{type(self).__name__}({own}base={self.base!r})"


def hyperparameters(name: str) -> dict[str, Any]:
    """Hyperparameter names and defaults of optimizer ``name`` (to pick its keys from a config).

    >>> hyperparameters("sam")
    {'momentum': 0.0, 'dampening': 0.0, 'nesterov': False, 'weight_decay': 0.0, 'rho': 0.05}
    """
    return OPTIMIZERS[name].hyperparameters()


def make(name: str, **hparams: Any) -> FunctionalOptimizer:
    """Build the functional optimizer registered as ``name`` from flat, validated hyperparameters.

    >>> make("sam", rho=0.1, momentum=0.9)
    FunctionalSAM(rho=0.1, base=SGDStep(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0))

    Raises:
        ConfigError: unknown name (with the closest valid one), unknown hyperparameter (with the
            allowed ones) or a bad value (with the value and what is allowed).
    """
    cls = OPTIMIZERS[name]
    allowed = cls.hyperparameters()
    for key in hparams:
        if key not in allowed:
            hint = " (the learning rate is passed to step(), not make())" if key == "lr" else ""
            raise ConfigError(
                f"unknown hyperparameter {key!r} for optimizer {name!r}; "
                f"allowed: {', '.join(allowed)}{hint}"
            )
    return cls.from_hyperparameters(**hparams)
