"""Local optimizers: SGD and the SAM family (SAM, ASAM, GSAM, SAF, MESA, TRAM).

Two entry points over one implementation of the math (pure helpers in each method's module):

- functional, per client, vmappable over clients (used by the vectorized engine); a method is a
  gradient rule over a descent step it takes as a value (``base``, an :class:`SGDStep`)::

      opt = dfl.optim.make("sam", rho=0.05, momentum=0.9)
      # the same: dfl.optim.functional.FunctionalSAM(rho=0.05, base=dfl.optim.SGDStep(momentum=0.9))
      state = opt.init(params, num_samples=N, num_classes=C)
      params, state, loss = opt.step(params, state, dfl.optim.Objective(forward, y, idx), lr)
      state = opt.begin_round(params, state)

- torch.optim classes with torch's closure convention (SGD, SAM, ASAM, GSAM, SAF, MESA, TRAM)::

      opt = dfl.optim.SAM(model.parameters(), rho=0.05, lr=0.1, momentum=0.9)
      loss = opt.step(closure)   # closure: zero_grad, loss, backward, return loss

Each functional class knows its torch.optim class (``shell``) and builds it over a model with the
same hyperparameters (``make(name, **hp).torch_optimizer(model, lr=lr)``, the serial engine's
optimizer). Learning-rate schedules over rounds: ``dfl.optim.schedule(name, lr, ...)``.
"""
from . import functional
from .asam import ASAM
from .base import OPTIMIZERS, FunctionalOptimizer, hyperparameters, make
from .core import Objective, Progress
from .descent import SGDStep
from .gsam import GSAM
from .losses import cross_entropy, kl_trajectory_loss
from .mesa import MESA
from .saf import SAF
from .sam import SAM
from .schedules import SCHEDULES, schedule
from .sgd import SGD
from .tram import TRAM

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "FunctionalOptimizer", "SGDStep", "Objective", "Progress", "make",
    "hyperparameters",
    "schedule",
    "functional", "cross_entropy", "kl_trajectory_loss",
    "SGD", "SAM", "ASAM", "GSAM", "SAF", "MESA", "TRAM",
]
