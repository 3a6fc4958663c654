"""MESA: Memory-Efficient Sharpness-Aware training (Du et al., NeurIPS 2022, arXiv:2205.14083).

SAF's variant without a per-sample memory: the reference outputs come from an exponential moving
average of the weights (the teacher), evaluated on the current batch (one extra forward, no extra
backward)::

    L_MESA(w) = CE(f_w(x), y) + lam * tau^2 * KL( softmax(f_v(x) / tau) || softmax(f_w(x) / tau) )
    w <- base_step(w, grad L_MESA(w))
    v <- ema_decay * v + (1 - ema_decay) * w          (after every step)
    v <- w  at the start of every round               (the teacher restarts at the round-start model)

Reference code: AngusDujw/SAF, ``MESA_train.py`` (``train_one_epoch``) with timm's ``ModelEmaV2``:
the same loss (per-sample KL averaged over the batch, times T^2, times ``--reinforce`` = lam),
the teacher updated after each optimizer step, the KL term on once ``epoch > kl_start_epoch``.

Choices for federated rounds:

- Warm-up: the KL term is off in the rounds ``round < warmup_rounds`` (the authors'
  ``kl_start_epoch``, with rounds for epochs; warmup_rounds = kl_start_epoch + 1 gives the same
  count of warm-up units) and in the first ``warmup_steps`` steps of the optimizer state (with
  ``local.reset_state``, the default, the state and its step counter restart every round, so
  these are the first local steps of every round; otherwise the first steps of the run). The
  round comes from ``progress`` (the serial shell: ``set_progress``); without it, round 0.
- Teacher at a round start: reset to the client's round-start model (after gossip), by ``init``
  and ``begin_round``, whether or not ``reset_state`` keeps the rest of the state. A teacher
  kept across rounds would average the client's pre-gossip local models and pull it away from
  the consensus it just received.
- ema_decay = 0.9 (horizon 1 / (1 - decay) = 10 local steps). The authors' 0.9998 has a horizon
  of 5000 steps, about one to four epochs of their ImageNet runs: the teacher lags the student
  by a span comparable to SAF's E epochs. Here the teacher restarts every round and a round has
  about 5-50 local steps, so the horizon must fit inside a round: with 0.9998 the teacher would
  stay within 1% of the round-start model (0.9998^50 = 0.99) and MESA would become a proximal
  term towards the gossip average instead of a trajectory loss; with 0.9 it lags the student by
  a few steps within the round, as the authors' teacher lags by a few epochs.

Defaults from the authors' README and run.sh: lam = 0.8, tau = 5.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .base import OPTIMIZERS, FunctionalOptimizer
from .core import Objective, Params, Progress, State, check, check_number, loss_and_grad
from .descent import SGDStep
from .losses import kl_trajectory_loss
from .saf import check_warmup_rounds, validate_trajectory, warmed_up
from .shell import WrapperOptimizer


def ema_update(ema: Params, params: Params, decay: Any) -> Params:
    """v <- decay * v + (1 - decay) * w, leaf-wise (pure)."""
    return {k: decay * v + (1 - decay) * params[k].detach() for k, v in ema.items()}


def validate_mesa(ema_decay: Any, warmup_steps: Any, warmup_rounds: Any) -> tuple[float, int, int]:
    check("ema_decay", 0 <= check_number("ema_decay", ema_decay) < 1, "in [0, 1)", ema_decay)
    ok = isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool) and warmup_steps >= 0
    check("warmup_steps", ok, "an int >= 0", warmup_steps)
    return float(ema_decay), warmup_steps, check_warmup_rounds(warmup_rounds)


def copy(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


class MESA(WrapperOptimizer):
    """MESA over a model's parameters: add :meth:`trajectory_loss` to the loss in the closure.

    Args:
        model: the torch.nn.Module being trained (its parameters are optimized; the EMA
            outputs are computed with ``torch.func.functional_call(model, ema, (inputs,))``).
        base_optimizer: None (dfl.optim.SGD), a torch.optim.Optimizer class or instance
            (an instance must hold exactly ``model.parameters()``).
        lam, tau, ema_decay, warmup_steps, warmup_rounds: as :class:`FunctionalMESA`
            (0.8, 5, 0.9, 0, 0); the round is read from :meth:`set_progress`.
        **base_kwargs: lr, momentum, weight_decay, ... of the base optimizer class.

    ``step`` calls the closure once, steps the base optimizer, then updates the EMA; it returns
    what the closure returned. :meth:`begin_round` restarts the teacher at the current weights.
    Example::

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
                 tau: float = 5.0, ema_decay: float = 0.9, warmup_steps: int = 0,
                 warmup_rounds: int = 0, **base_kwargs: Any):
        self.lam, self.tau = validate_trajectory(lam, tau)
        self.ema_decay, self.warmup_steps, self.warmup_rounds = validate_mesa(
            ema_decay, warmup_steps, warmup_rounds)
        self.model = model
        self.named = dict(model.named_parameters())
        params = None if isinstance(base_optimizer, torch.optim.Optimizer) else list(self.named.values())
        defaults = dict(lam=self.lam, tau=self.tau, ema_decay=self.ema_decay)
        super().__init__(params, base_optimizer, defaults, base_kwargs)
        self.begin_round()
        self.state["mesa"] = {"step": 0}

    def begin_round(self) -> None:
        """The teacher restarts at the current weights (the round-start model)."""
        for p in self.named.values():
            self.state[p]["ema"] = p.detach().clone()

    def ema(self) -> Params:
        """The EMA weights, keyed like ``model.named_parameters()``."""
        return {n: self.state[p]["ema"] for n, p in self.named.items()}

    def trajectory_loss(self, logits: Tensor, inputs: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """lam * tau^2 * KL(EMA-model outputs || current outputs) on the batch ``inputs``."""
        warm = self.state["mesa"]["step"] < self.warmup_steps
        if warm or not warmed_up(self.progress, self.warmup_rounds):
            return logits.new_zeros(())
        with torch.no_grad():
            ref = torch.func.functional_call(self.model, self.ema(), (inputs,))
        return self.lam * kl_trajectory_loss(logits, ref, self.tau, weight)

    def loss_term(self, logits: Tensor, inputs: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """:meth:`trajectory_loss` of the batch (the serial engine's closure term)."""
        return self.trajectory_loss(logits, inputs)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        loss = None if closure is None else self.run_closure(closure, "MESA")
        self.base_optimizer.step()
        new = ema_update(self.ema(), {n: p for n, p in self.named.items()}, self.ema_decay)
        for n, p in self.named.items():
            self.state[p]["ema"] = new[n]
        self.state["mesa"]["step"] += 1
        return loss


@OPTIMIZERS.register("mesa")
class FunctionalMESA(FunctionalOptimizer):
    """Functional MESA: the gradient of CE + the trajectory loss to an EMA teacher, descended
    along by the base step; the teacher moves after every descent.

    Args:
        lam: weight of the trajectory loss, >= 0 (default 0.8).
        tau: softmax temperature, > 0 (default 5).
        ema_decay: decay of the teacher's weight average in [0, 1) (default 0.9, see above).
        warmup_steps: first steps of the optimizer state without the KL term (default 0).
        warmup_rounds: rounds without the KL term (default 0).
        base: the descent step (default ``SGDStep()``).

    State: the base step's plus ``ema`` (the teacher, a copy of the params' structure), set to
    the params by :meth:`init` and :meth:`begin_round`.
    """

    name = "mesa"
    label = "MESA"
    sam_family = True
    shell = MESA
    has_after_descent = True

    def __init__(self, *, lam: float = 0.8, tau: float = 5.0, ema_decay: float = 0.9,
                 warmup_steps: int = 0, warmup_rounds: int = 0, base: Optional[SGDStep] = None):
        super().__init__(base=base)
        self.lam, self.tau = validate_trajectory(lam, tau)
        self.ema_decay, self.warmup_steps, self.warmup_rounds = validate_mesa(
            ema_decay, warmup_steps, warmup_rounds)

    def init(self, params: Params, *, num_samples: int = 0, num_classes: int = 0) -> State:
        return {**self.base.init(params), "ema": copy(params)}

    def begin_round(self, params: Params, state: State) -> State:
        """The teacher restarts at the round-start model."""
        return {**state, "ema": copy(params)}

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        if not warmed_up(progress, self.warmup_rounds):  # no teacher forward in the warm-up rounds
            grads, loss, _ = loss_and_grad(obj, params)
            return grads, state, loss
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

    def shell_inputs(self, model: torch.nn.Module, *, num_samples: int,
                     num_classes: int) -> tuple[Any, dict[str, Any]]:
        """The model (its teacher's outputs come from ``functional_call`` of it)."""
        return model, {}
