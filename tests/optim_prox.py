"""A local optimizer defined and registered in this one file, as a user would add one: FedProx's
local step (Li et al., MLSys 2020, arXiv:1812.06127), SGD on CE + mu/2 ||w - w_0||^2 with w_0 the
round-start weights. tests/test_optim_new_method.py runs it through both engines; nothing else in
dfl names it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from dfl.optim import OPTIMIZERS, SGD, FunctionalOptimizer, SGDStep
from dfl.optim.core import check, check_number, loss_and_grad

NAME = "prox_test"


def check_mu(mu: Any) -> float:
    check("mu", check_number("mu", mu) >= 0, ">= 0", mu)
    return float(mu)


class Prox(SGD):
    """The torch.optim form: the closure adds :meth:`loss_term`, mu/2 ||w - w_0||^2."""

    def __init__(self, params: Any, lr: float = 1e-3, *, mu: float = 0.1, **sgd: Any):
        super().__init__(params, lr=lr, **sgd)
        self.mu = check_mu(mu)
        self.begin_round()

    def begin_round(self) -> None:
        self.anchor = {p: p.detach().clone() for g in self.param_groups for p in g["params"]}

    def loss_term(self, logits: Tensor, inputs: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return 0.5 * self.mu * sum(((p - a) ** 2).sum() for p, a in self.anchor.items())


@OPTIMIZERS.register(NAME)
class FunctionalProx(FunctionalOptimizer):
    """The functional form: direction g + mu (w - w_0); state: the base step's plus ``anchor``."""

    name = NAME
    label = "Prox"
    sam_family = False
    shell = Prox

    def __init__(self, *, mu: float = 0.1, base: Optional[SGDStep] = None):
        super().__init__(base=base)
        self.mu = check_mu(mu)

    def init(self, params, *, num_samples: int = 0, num_classes: int = 0):
        return {**self.base.init(params), "anchor": {k: v.detach().clone() for k, v in params.items()}}

    def begin_round(self, params, state):
        return {**state, "anchor": {k: v.detach().clone() for k, v in params.items()}}

    def gradient(self, params, state, obj, progress=None):
        grads, loss, _ = loss_and_grad(obj, params)
        return ({k: torch.add(g, params[k] - state["anchor"][k], alpha=self.mu) for k, g in grads.items()},
                state, loss)
