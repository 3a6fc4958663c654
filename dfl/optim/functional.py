"""The functional (vmappable, per-client) side of dfl.optim in one import.

    from dfl.optim import functional as F
    opt = F.make("sam", rho=0.05, momentum=0.9)
    state = opt.init(params, num_samples=N, num_classes=C)
    params, state, loss = opt.step(params, state, F.Objective(forward, y, idx), lr)
    opt = F.FunctionalSAM(rho=0.05, base=F.SGDStep(momentum=0.9))   # the same optimizer

The pure math helpers below are shared with the torch.optim classes.
"""
from .asam import FunctionalASAM, asam_perturbation
from .base import OPTIMIZERS, FunctionalOptimizer, hyperparameters, make
from .core import Objective, global_norm, loss_and_grad, tree_dot, tree_map
from .descent import SGDStep, sgd_update
from .gsam import FunctionalGSAM, gsam_direction, gsam_rho
from .losses import cross_entropy, kl_trajectory_loss
from .mesa import FunctionalMESA, ema_update
from .saf import FunctionalSAF, saf_read, saf_write
from .sam import FunctionalSAM, sam_perturbation
from .sgd import FunctionalSGD
from .tram import FunctionalTRAM, tram_radius

__all__ = [
    "OPTIMIZERS", "FunctionalOptimizer", "Objective", "make", "hyperparameters", "loss_and_grad",
    "global_norm", "tree_dot", "tree_map", "cross_entropy", "kl_trajectory_loss",
    "SGDStep", "FunctionalSGD", "FunctionalSAM", "FunctionalASAM", "FunctionalGSAM", "FunctionalSAF",
    "FunctionalMESA", "FunctionalTRAM", "sgd_update", "sam_perturbation", "asam_perturbation",
    "gsam_direction", "gsam_rho", "saf_read", "saf_write", "ema_update", "tram_radius",
]
