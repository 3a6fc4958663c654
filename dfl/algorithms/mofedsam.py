"""MoFedSAM (Qu et al., "Generalized Federated Learning via Sharpness Aware Minimization",
ICML 2022), FedSAM with the client-level momentum of FedCM (Xu et al. 2021).

Each local step descends along a mix of the SAM gradient and the server's last global update,
as woodenchild95/FL-Simulator does it (client/mofedsam.py, server/MoFedSAM.py)::

    d     = alpha * g_SAM(y) + (1 - alpha) * Delta        (then the clip, if local.clip_grad_norm)
    y    <- y - lr * (d + weight_decay * y)                (weight decay not scaled by alpha)
    Delta = -mean_i(x_i - x^t) / (K * lr_t)               (after round t; 0 before the first)

Delta is the average per-step descent direction of the previous round (the mean client update,
before the server learning rate). alpha = algorithm.mofedsam_alpha (0.1, FL-Simulator's default)
scales the SAM gradient from the first round on, where Delta = 0.
"""
from .base import Correction, ServerAveraging
from .registry import ALGORITHMS


@ALGORITHMS.register("mofedsam")
class MoFedSAM(ServerAveraging):
    name = "mofedsam"
    label = "MoFedSAM"
    family = "sam"

    def init(self, bank):
        super().init(bank)
        self.delta = bank[0].new_zeros(bank.shape[1])

    def correction(self, ctx):
        alpha = self.cfg.algorithm.mofedsam_alpha
        return Correction(grad_scale=alpha, direction=(1 - alpha) * self.delta)

    def on_update(self, mean_update, ctx):
        self.delta = -mean_update / (ctx.local_steps * ctx.lr)

    def state_dict(self):
        return {**super().state_dict(), "delta": self.delta}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.delta = state["delta"]
