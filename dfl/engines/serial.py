"""The reference engine: a plain loop over clients, each with its own nn.Module and torch.optim
object (dfl.optim's classes), as the papers' code does. Slow on purpose and independent of the
vectorized path: equal configs and seeds give equal metrics on both (tests check 1e-4).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import optim
from ..algorithms import Correction
from ..optim.shell import ShellHooks
from .base import ENGINES, Engine
from .plan import autocast


def torch_optimizer(name: str, model: torch.nn.Module, *, lr: float, num_samples: int,
                    num_classes: int, clip_grad_norm: float = 0.0, **hp: Any) -> torch.optim.Optimizer:
    """The torch.optim class of optimizer `name` over a client's model, with the same
    hyperparameters as the functional form (built by the registered class, which knows its
    shell and what the shell takes: ASAM the parameter names, MESA and TRAM the model, SAF the
    size of its memory). ``clip_grad_norm`` clips the direction of the descent step."""
    return optim.make(name, **hp).torch_optimizer(model, lr=lr, num_samples=num_samples,
                                                  num_classes=num_classes, clip_grad_norm=clip_grad_norm)


def closure(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            index: Optional[torch.Tensor] = None, precision: str = "fp32") -> Callable[[], torch.Tensor]:
    """torch's closure for one step of a client: clear the gradients, cross-entropy plus the term
    a dfl.optim optimizer asks for (``opt.loss_term``: SAF's and MESA's trajectory loss, TRAM's
    radius measured; 0 for the others and for torch's own optimizers), backward; it returns the
    cross-entropy, detached (the loss the functional optimizers report). ``precision`` bf16: the
    forward under autocast, the loss on logits of the weights' dtype (engine.precision)."""
    def run() -> torch.Tensor:
        opt.zero_grad()
        with autocast(precision, x.device):
            logits = model(x)
        logits = logits.to(next(model.parameters()).dtype)  # bf16 logits back to the weights' dtype
        loss = F.cross_entropy(logits, y)
        term = opt.loss_term(logits, x, index) if isinstance(opt, ShellHooks) else 0.0
        (loss + term).backward()
        return loss.detach()
    return run


@ENGINES.register("serial")
class SerialEngine(Engine):
    """One model copy and one torch.optim optimizer per client, clients one after another."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.models: list[Optional[torch.nn.Module]] = [None] * self.data.n
        self.opts: list[Optional[torch.optim.Optimizer]] = [None] * self.data.n

    def _client(self, i: int, lr: float, fresh: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Client i's model and optimizer; ``fresh`` builds a new optimizer (reset_state)."""
        if self.models[i] is None:
            self.models[i] = copy.deepcopy(self.model).to(self.device)
        if self.opts[i] is None or fresh:
            model = self.models[i]
            self.opts[i] = torch_optimizer(
                self.optimizer, model, lr=lr, num_samples=int(self.data.sizes.max()),
                num_classes=self.data.num_classes, clip_grad_norm=self.local.clip_grad_norm, **self.hparams)
        return self.models[i], self.opts[i]

    def train(self, bank, active, steps, lr, round_, correction: Optional[Correction]):
        losses = np.full(self.data.n, np.nan)
        progress = self.progress(lr, round_)
        for i in np.flatnonzero(active):
            model = self._client(int(i), lr)[0]
            self.layout.load_row(model, bank[i])  # before a fresh optimizer: MESA/TRAM copy the weights
            opt = self._client(int(i), lr, fresh=self.local.reset_state)[1]
            for group in opt.param_groups:
                group["lr"] = lr
            opt.begin_round()  # MESA's teacher, TRAM's reference: the round-start weights
            opt.set_progress(progress)  # methods that follow the run (GSAM's rho_t, MESA's warm-up)
            local, glob = self.data.batches(np.array([i]), round_, int(steps[i]))
            descent = opt.descent()  # the SGD step every method ends with
            descent.correction = None
            if correction is not None:
                d = correction.direction
                corr = self.layout.unflatten((d if d.dim() == 1 else d[i]).reshape(1, -1).to(self.device))
                descent.correction = (correction.grad_scale,
                                      {p: corr[name][0] for name, p in model.named_parameters()})
            total = 0.0
            for k in range(int(steps[i])):
                x = self.data.inputs(glob[:, k], np.array([i]), round_, k)[0]
                y, idx = self.data.y[glob[0, k]], local[0, k]
                total += float(opt.step(closure(model, opt, x, y, idx, self.local.precision)))
            bank[i] = self.layout.row(model)
            losses[i] = total / max(int(steps[i]), 1)
        return bank, losses

    def describe(self):
        return {"strategy": "serial", "precision": self.local.precision}

    def reset_clients(self, idx):
        """Drop the clients' model copies and optimizers: rebuilt fresh on their next round."""
        for i in idx:
            self.models[int(i)] = self.opts[int(i)] = None

    def state_dict(self):
        if self.local.reset_state:  # a new optimizer every round: nothing carries over
            return {}
        return {"opt_state": [o.state_dict() if o is not None else None for o in self.opts]}

    def load_state_dict(self, state):
        for i, s in enumerate(state.get("opt_state", [])):
            if s is not None:
                self._client(i, 1.0)[1].load_state_dict(s)
