"""SAF: Sharpness-Aware training for Free (Du et al., NeurIPS 2022, arXiv:2205.14083).

SAF replaces SAM's sharpness term by a trajectory loss: the KL divergence between the current
outputs and the outputs the model produced for the same samples E epochs ago. One forward and one
backward pass per step (no second gradient)::

    L_SAF(w) = CE(f_w(x), y) + lam * tau^2 * KL( softmax(z_old / tau) || softmax(f_w(x) / tau) )
    w <- base_step(w, grad L_SAF(w));  memory[x] <- f_w(x) (detached, before the step)

Reference code: AngusDujw/SAF, ``SAF_train.py`` (``train_one_epoch``): the same loss
(``F.kl_div(softmax(out / T).log(), softmax(old / T), reduction="none").sum(-1).mean() * T**2``,
i.e. the per-sample KL averaged over the batch, times T^2, times ``--reinforce`` = lam), the
outputs stored are those of the step's forward pass at w.

Memory (the authors keep an array ``train_logits[sample, epoch % (E + 1)]`` and read the slot of
epoch - E): each sample keeps a ring buffer of its last E outputs and a visit counter c. At the
c-th visit the reference is the output stored at visit c - E, i.e. E epochs ago when every sample
is seen once per epoch (with E = 1: the output of the previous visit). Samples seen fewer than E
times contribute no KL term (the authors' array would hold zeros there). If a batch holds a
sample twice (sampling with replacement), one of its outputs is stored and two visits are
counted. Memory cost: num_samples * E * num_classes. The memory is optimizer state: with
``local.reset_state`` (the default) it starts empty every round, so the KL term needs E visits of
a sample within one round (local epochs > E); the authors' memory lives across all epochs.

Warm-up: the authors add the KL term once ``epoch > kl_start_epoch`` (default 5); here once
``progress.round >= warmup_rounds`` (so warmup_rounds = kl_start_epoch + 1 warm-up units; the
serial shell reads the round from ``set_progress``). Without progress the run is in round 0.

Defaults from the authors' README and run.sh: lam = 0.3, tau = 5, E = 3 (run.sh uses 2).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import OPTIMIZERS, FunctionalOptimizer
from .core import Objective, Params, Progress, State, check, check_number, loss_and_grad
from .descent import SGDStep
from .losses import kl_trajectory_loss
from .shell import WrapperOptimizer


def saf_memory(num_samples: int, num_classes: int, epochs: int, like: Tensor) -> dict[str, Tensor]:
    """Empty logits memory: ``{"memory": (N, E, C) zeros, "count": (N,) int64 zeros}``."""
    check("num_samples", isinstance(num_samples, int) and num_samples > 0,
          "a positive int (SAF keeps a logits memory per sample)", num_samples)
    check("num_classes", isinstance(num_classes, int) and num_classes > 0,
          "a positive int", num_classes)
    return {
        "memory": torch.zeros(num_samples, epochs, num_classes, dtype=like.dtype, device=like.device),
        "count": torch.zeros(num_samples, dtype=torch.int64, device=like.device),
    }


def saf_read(memory: Tensor, count: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Reference logits of samples ``index`` from E visits ago, and whether they exist.

    Returns:
        (ref (B, C), valid (B,) bool: the sample was seen at least E times before).
    """
    epochs = memory.shape[1]
    c = count[index]
    return memory[index, c % epochs], c >= epochs


def saf_write(memory: Tensor, count: Tensor, index: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Store ``logits`` (B, C) in each sample's current slot and count the visit (pure)."""
    n, epochs, c = memory.shape
    slot = index * epochs + count[index] % epochs
    flat = memory.reshape(n * epochs, c).index_copy(0, slot, logits.detach().to(memory.dtype))
    return flat.reshape(n, epochs, c), count.index_add(0, index, torch.ones_like(index))


def validate_trajectory(lam: Any, tau: Any) -> tuple[float, float]:
    check("lam", check_number("lam", lam) >= 0, ">= 0", lam)
    check("tau", check_number("tau", tau) > 0, "> 0", tau)
    return float(lam), float(tau)


def check_warmup_rounds(warmup_rounds: Any) -> int:
    ok = isinstance(warmup_rounds, int) and not isinstance(warmup_rounds, bool) and warmup_rounds >= 0
    check("warmup_rounds", ok, "an int >= 0", warmup_rounds)
    return warmup_rounds


def warmed_up(progress: Optional[Progress], warmup_rounds: int) -> bool:
    """Whether the trajectory (KL) term is on this round: round >= warmup_rounds (round 0 if None)."""
    return (0 if progress is None else progress.round) >= warmup_rounds


def check_epochs(saf_epochs: Any) -> int:
    ok = isinstance(saf_epochs, int) and not isinstance(saf_epochs, bool) and saf_epochs >= 1
    check("saf_epochs", ok, "an int >= 1", saf_epochs)
    return saf_epochs


class SAF(WrapperOptimizer):
    """SAF wrapping a base optimizer: add :meth:`trajectory_loss` to the loss in the closure.

    Args:
        params: parameters or param groups (None if ``base_optimizer`` is an instance).
        base_optimizer: None (dfl.optim.SGD), a torch.optim.Optimizer class or instance.
        num_samples: number of training samples (sample ids are in [0, num_samples)).
        num_classes: number of classes (width of the logits).
        lam, tau, saf_epochs, warmup_rounds: as :class:`FunctionalSAF` (defaults 0.3, 5, 3, 0).
        **base_kwargs: lr, momentum, weight_decay, ... of the base optimizer class.

    The data loader must yield the sample ids. ``step`` calls the closure once, steps the base
    optimizer, then stores the outputs seen by ``trajectory_loss`` in the memory; it returns what
    the closure returned (CE + trajectory term if you add it, as below). Example::

        opt = SAF(model.parameters(), num_samples=len(train_set), num_classes=10, lr=0.1)
        for x, y, idx in loader:
            def closure():
                opt.zero_grad()
                logits = model(x)
                loss = F.cross_entropy(logits, y) + opt.trajectory_loss(logits, idx)
                loss.backward()
                return loss
            opt.step(closure)
    """

    def __init__(self, params: Optional[Iterable], base_optimizer: Any = None, *,
                 num_samples: int, num_classes: int, lam: float = 0.3, tau: float = 5.0,
                 saf_epochs: int = 3, warmup_rounds: int = 0, **base_kwargs: Any):
        self.lam, self.tau = validate_trajectory(lam, tau)
        self.saf_epochs = check_epochs(saf_epochs)
        self.warmup_rounds = check_warmup_rounds(warmup_rounds)
        defaults = dict(lam=self.lam, tau=self.tau, saf_epochs=self.saf_epochs,
                        warmup_rounds=self.warmup_rounds)
        super().__init__(params, base_optimizer, defaults, base_kwargs)
        like = self.param_groups[0]["params"][0]
        self.state["saf"] = saf_memory(num_samples, num_classes, self.saf_epochs, like)
        self._seen: Optional[tuple[Tensor, Tensor]] = None

    def trajectory_loss(self, logits: Tensor, index: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """lam * tau^2 * KL(past outputs || current outputs) for the samples ``index`` (0 during
        the warm-up rounds; the outputs are stored in either case)."""
        mem = self.state["saf"]
        ref, valid = saf_read(mem["memory"], mem["count"], index)
        mask = valid if weight is None else valid * weight
        self._seen = (index, logits.detach())
        if not warmed_up(self.progress, self.warmup_rounds):
            return logits.new_zeros(())
        return self.lam * kl_trajectory_loss(logits, ref, self.tau, mask)

    def loss_term(self, logits: Tensor, inputs: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """:meth:`trajectory_loss` of the batch's sample ids (the serial engine's closure term)."""
        return self.trajectory_loss(logits, index)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        loss = None if closure is None else self.run_closure(closure, "SAF")
        self.base_optimizer.step()
        if self._seen is not None:
            mem = self.state["saf"]
            mem["memory"], mem["count"] = saf_write(mem["memory"], mem["count"], *self._seen)
            self._seen = None
        return loss


@OPTIMIZERS.register("saf")
class FunctionalSAF(FunctionalOptimizer):
    """Functional SAF: the gradient of CE + the trajectory loss, descended along by the base step.

    Args:
        lam: weight of the trajectory loss, >= 0 (default 0.3).
        tau: softmax temperature, > 0 (default 5).
        saf_epochs: E, how many visits back the reference outputs are taken (default 3).
        warmup_rounds: rounds without the KL term (the authors' kl_start_epoch; default 0).
        base: the descent step (default ``SGDStep()``).

    ``init`` needs ``num_samples`` (shard size; ``obj.index`` < num_samples) and ``num_classes``.
    State: the base step's plus ``memory`` (N, E, C) and ``count`` (N,).
    """

    name = "saf"
    label = "SAF"
    sam_family = True
    shell = SAF

    def __init__(self, *, lam: float = 0.3, tau: float = 5.0, saf_epochs: int = 3,
                 warmup_rounds: int = 0, base: Optional[SGDStep] = None):
        super().__init__(base=base)
        self.lam, self.tau = validate_trajectory(lam, tau)
        self.saf_epochs = check_epochs(saf_epochs)
        self.warmup_rounds = check_warmup_rounds(warmup_rounds)

    def init(self, params: Params, *, num_samples: int = 0, num_classes: int = 0) -> State:
        like = next(iter(params.values()))
        return {**self.base.init(params),
                **saf_memory(num_samples, num_classes, self.saf_epochs, like)}

    def gradient(self, params: Params, state: State, obj: Objective,
                 progress: Optional[Progress] = None) -> tuple[Params, State, Tensor]:
        if obj.index is None:
            raise ConfigError("saf: the objective needs sample ids (Objective.index), got None")
        ref, valid = saf_read(state["memory"], state["count"], obj.index)
        mask = valid if obj.weight is None else valid * obj.weight

        def trajectory(logits: Tensor) -> Tensor:
            return self.lam * kl_trajectory_loss(logits, ref, self.tau, mask)

        on = warmed_up(progress, self.warmup_rounds)
        grads, loss, logits = loss_and_grad(obj, params, trajectory if on else None)
        memory, count = saf_write(state["memory"], state["count"], obj.index, logits)
        return grads, {**state, "memory": memory, "count": count}, loss

    def shell_inputs(self, model: torch.nn.Module, *, num_samples: int,
                     num_classes: int) -> tuple[Any, dict[str, Any]]:
        """The parameters, and the size of the logits memory."""
        return model.parameters(), dict(num_samples=num_samples, num_classes=num_classes)
