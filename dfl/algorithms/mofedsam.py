"""MoFedSAM (Qu et al., "Generalized Federated Learning via Sharpness Aware Minimization",
ICML 2022), FedSAM with the client-level momentum of FedCM (Xu et al. 2021).

Each local step descends along a mix of the SAM gradient and the server's last global update:
    y <- y - lr (beta g_SAM(y) + (1 - beta) Delta),   Delta = -(x^t - x^{t-1}) / (K lr),
i.e. Delta is the average per-step descent direction of the previous round. In the first round
Delta = 0 and beta is not applied. beta = algorithm.beta.
"""
import torch

from .base import SAM_FAMILY, Correction, ServerAveraging
from .registry import ALGORITHMS


@ALGORITHMS.register("mofedsam")
class MoFedSAM(ServerAveraging):
    name = "mofedsam"
    optimizers = SAM_FAMILY

    def init(self, bank):
        super().init(bank)
        self.delta = None

    def correction(self, ctx):
        if self.delta is None:
            return None
        beta = self.cfg.algorithm.beta
        return Correction(lr_scale=beta, direction=(1 - beta) * self.delta)

    def on_update(self, update, ctx):
        self.delta = -update / (ctx.local_steps * ctx.lr)

    def state_dict(self):
        return {**super().state_dict(), "delta": self.delta}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.delta = state["delta"]
