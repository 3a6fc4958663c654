"""Local optimizers: SGD and the SAM family (SAM, ASAM, GSAM, SAF, MESA, TRAM).

Two entry points over one implementation of the math (pure helpers in each method's module):

- functional, per client, vmappable over clients (used by the vectorized engine)::

      opt = dfl.optim.make("sam", rho=0.05, momentum=0.9)
      state = opt.init(params, num_samples=N, num_classes=C)
      params, state, loss = opt.step(params, state, dfl.optim.Objective(forward, y, idx), lr)
      state = opt.begin_round(params, state)

- torch.optim classes with torch's closure convention (SGD, SAM, ASAM, GSAM, SAF, MESA, TRAM)::

      opt = dfl.optim.SAM(model.parameters(), rho=0.05, lr=0.1, momentum=0.9)
      loss = opt.step(closure)   # closure: zero_grad, loss, backward, return loss

Learning-rate schedules over rounds: ``dfl.optim.schedule(name, lr, ...)``.
"""
from . import functional
from .asam import ASAM
from .base import OPTIMIZERS, FunctionalOptimizer, Objective, Progress, hyperparameters, make
from .gsam import GSAM
from .losses import cross_entropy, kl_trajectory_loss
from .mesa import MESA
from .saf import SAF
from .sam import SAM
from .schedules import SCHEDULES, schedule
from .sgd import SGD
from .tram import TRAM

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "FunctionalOptimizer", "Objective", "Progress", "make", "hyperparameters",
    "schedule",
    "functional", "cross_entropy", "kl_trajectory_loss",
    "SGD", "SAM", "ASAM", "GSAM", "SAF", "MESA", "TRAM",
]
