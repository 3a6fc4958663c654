"""TRAM: Trust Region Aware Minimization (Sherborne, Saphra, Dasigi, Peng, "TRAM: Bridging Trust
Regions and Sharpness Aware Minimization", ICLR 2024, arXiv:2310.03646).

SAM whose neighbourhood radius is not a constant but a trust-region measure in function space:
how far the current model's outputs have moved from those of a reference model on the batch.
Update rule (g = grad L(w), p_w = softmax(f_w(x) / tau), all parameters flattened together)::

    d_t   = mean_i KL( p_ref(x_i) || p_w(x_i) )          # function-space divergence, a constant
    rho_t = min(lam * d_t, rho)                          # the radius: scaled, capped at rho
    e     = rho_t * g / (||g|| + 1e-12)                  # SAM's ascent with radius rho_t
    w     <- base_step(w, grad L(w + e))                 # SGD (momentum, weight decay at w)

The reported loss is L(w). d_t is computed without gradient (stop-gradient), as in the authors'
code, where the divergence only scales the ascent step. With rho_t = rho for every step this is
SAM; with d_t = 0 (the current model equals the reference, e.g. the first local step of a round)
the step is plain SGD.

The reference model. The paper's variants differ in the reference: TRAM-theta_0 (the pre-trained
model), TRAM-theta_{t-1} (the previous step), TRAM-x (noised inputs). Here the reference is the
model held at the last ``begin_round`` (the engine calls it at the start of every round, after
gossip), i.e. TRAM-theta_0 with theta_0 = the client's model at the start of the round: local
steps that move the client's predictions away from the consensus get a larger SAM neighbourhood.
Before the first ``begin_round`` the reference is the initial weights.

Reference code and deviations (github.com/tomsherborne/tram_optimizer, ``kl.py``
``KLDivergence`` and ``tram.py`` ``TRAM.first_step``, driven by the README's training step):

- Direction and temperature: as the code, the forward KL(target || current) of the logits at
  temperature 1 (``tau = 1``; no tau^2 factor, a ``tau != 1`` only softens both distributions).
- Reduction (kept deviation): the code's ``F.kl_div(..., reduction="mean") / x.size(0)``
  averages over all B * C elements and then divides by B again, i.e. sum_i KL_i / (B^2 C),
  times a ``logit_scale``. Here d_t is the per-sample KL averaged over the batch
  (``batchmean``, as SAF / MESA), so the radius does not shrink with the batch size and the
  number of classes: with the code's reduction and scale 1, a batch of 32 over 10 classes
  divides the divergence by 10240 and TRAM is plain SGD for any radius the KL reaches.
  ``lam = logit_scale / (B * C)`` reproduces the code's value exactly.
- Perturbation (kept deviation, a bug of the code): its ``first_step`` adds
  ``scale * ones_like(p)`` (``scale = d_t / ||g||``) to every weight, a constant shift that is
  not along the gradient (``p.grad`` is never multiplied in). Here e = rho_t * g / ||g||, SAM's
  ascent with the radius rho_t (the rule above), so that TRAM with a constant radius is SAM.
- Cap (addition): rho_t is capped at ``rho`` (default 0.5, ASAM's radius, 10x SAM's), which the
  code does not have: it keeps a client that drifted far in function space from taking a
  destructive ascent step; a large ``rho`` recovers the uncapped rule.

Defaults: ``lam = 1``, ``tau = 1``, ``rho = 0.5``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .base import OPTIMIZERS
from .core import Objective, Params, Progress, State, check, check_number, loss_and_grad
from .descent import SGDStep
from .losses import kl_trajectory_loss
from .sam import SAM, FunctionalSAM, check_rho, sam_ascent, sam_perturbation


def tram_radius(logits: Tensor, ref_logits: Tensor, *, lam: Any, tau: Any, rho: Any,
                weight: Optional[Tensor] = None) -> Tensor:
    """rho_t = min(lam * mean_i KL(softmax(ref_i / tau) || softmax(logits_i / tau)), rho), detached.

    ``weight`` (B,) weights the mean over the batch (0 drops a padded sample).
    """
    kl = kl_trajectory_loss(logits.detach(), ref_logits.detach(), tau, weight) / (tau * tau)
    return torch.clamp(lam * kl, max=rho)


def validate_tram(rho: Any, lam: Any, tau: Any) -> tuple[float, float, float]:
    rho = check_rho(rho)
    check("lam", check_number("lam", lam) >= 0, ">= 0", lam)
    check("tau", check_number("tau", tau) > 0, "> 0", tau)
    return rho, float(lam), float(tau)


class TRAM(SAM):
    """TRAM over a model's parameters (shell over :func:`tram_radius` and the SAM step).

    Args:
        model: the torch.nn.Module being trained (the reference outputs are computed with
            ``torch.func.functional_call(model, reference, (inputs,))``).
        base_optimizer: None (dfl.optim.SGD), a torch.optim.Optimizer class or instance
            (an instance must hold exactly ``model.parameters()``).
        rho, lam, tau: as :class:`FunctionalTRAM` (0.5, 1, 1).
        **base_kwargs: lr, momentum, weight_decay, ... of the base optimizer class.

    The closure must hand the batch's outputs to :meth:`observe` (it adds nothing to the loss;
    it measures the radius on the first closure call of a step). Call :meth:`begin_round` to
    move the reference to the current weights. Example::

        opt = TRAM(model, lr=0.1)
        opt.begin_round()
        def closure():
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y) + opt.observe(logits, x)
            loss.backward()
            return loss
        loss = opt.step(closure)
    """

    def __init__(self, model: torch.nn.Module, base_optimizer: Any = None, *, rho: float = 0.5,
                 lam: float = 1.0, tau: float = 1.0, **base_kwargs: Any):
        rho, self.lam, self.tau = validate_tram(rho, lam, tau)
        self.model = model
        self.named = dict(model.named_parameters())
        params = None if isinstance(base_optimizer, torch.optim.Optimizer) else list(self.named.values())
        super().__init__(params, base_optimizer, rho=rho, **base_kwargs)
        for group in self.param_groups:
            group.setdefault("lam", self.lam)
            group.setdefault("tau", self.tau)
        self.state["tram"] = {"observing": False, "radius": None}
        self.begin_round()

    def begin_round(self) -> None:
        """Store the current weights as the reference."""
        for p in self.named.values():
            self.state[p]["ref"] = p.detach().clone()

    def reference(self) -> Params:
        """The reference weights, keyed like ``model.named_parameters()``."""
        return {n: self.state[p]["ref"] for n, p in self.named.items()}

    def observe(self, logits: Tensor, inputs: Tensor, weight: Optional[Tensor] = None) -> float:
        """Measure rho_t from the batch's outputs ``logits`` at w (first closure call); returns 0."""
        tram = self.state["tram"]
        if tram["observing"]:
            with torch.no_grad():
                ref = torch.func.functional_call(self.model, self.reference(), (inputs,))
            tram["radius"] = tram_radius(logits, ref, lam=self.lam, tau=self.tau, rho=self.rho,
                                         weight=weight)
            tram["observing"] = False
        return 0.0

    def loss_term(self, logits: Tensor, inputs: Tensor, index: Optional[Tensor] = None) -> float:
        """:meth:`observe` the batch (the serial engine's closure term; adds 0)."""
        return self.observe(logits, inputs)

    def perturbation(self, params: Params, grads: Params) -> Params:
        radius = self.state["tram"]["radius"]
        if radius is None:
            raise TypeError("TRAM.step: the closure must pass the batch's outputs to "
                            "opt.observe(logits, inputs) before backward")
        return sam_perturbation(grads, radius)

    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Tensor:
        self.state["tram"].update(observing=True, radius=None)
        try:
            return super().step(closure)
        finally:
            self.state["tram"].update(observing=False, radius=None)


@OPTIMIZERS.register("tram")
class FunctionalTRAM(FunctionalSAM):
    """Functional TRAM: SAM's rule with a radius measured in function space (see the module
    docstring for the rule).

    Args:
        rho: cap of the radius, >= 0 (default 0.5; 0 gives plain SGD).
        lam: scale of the divergence, >= 0 (default 1, the authors' logit_scale).
        tau: softmax temperature of the divergence, > 0 (default 1).
        base: the descent step (default ``SGDStep()``).

    State: the base step's plus ``ref`` (the reference weights, a copy of the params'
    structure), set by :meth:`init` and :meth:`begin_round`. Two gradient evaluations and one
    extra forward (the reference outputs) per step.
    """

    name = "tram"
    label = "TRAM"
    sam_family = True
    shell = TRAM

    def __init__(self, *, rho: float = 0.5, lam: float = 1.0, tau: float = 1.0,
                 base: Optional[SGDStep] = None):
        rho, self.lam, self.tau = validate_tram(rho, lam, tau)
        super().__init__(rho=rho, base=base)

    def init(self, params: Params, *, num_samples: int = 0, num_classes: int = 0) -> State:
        return {**self.base.init(params), "ref": {k: v.detach().clone() for k, v in params.items()}}

    def begin_round(self, params: Params, state: State) -> State:
        """The reference becomes the weights the client starts the round with."""
        return {**state, "ref": {k: v.detach().clone() for k, v in params.items()}}

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        g, loss, logits = loss_and_grad(obj, params)
        ref = obj.forward(state["ref"]).detach()
        radius = tram_radius(logits, ref, lam=self.lam, tau=self.tau, rho=self.rho, weight=obj.weight)
        g_p, _, _ = loss_and_grad(obj, sam_ascent(params, g, radius))
        return g_p, state, loss

    def shell_inputs(self, model: torch.nn.Module, *, num_samples: int,
                     num_classes: int) -> tuple[Any, dict[str, Any]]:
        """The model (the reference outputs come from ``functional_call`` of it)."""
        return model, {}
