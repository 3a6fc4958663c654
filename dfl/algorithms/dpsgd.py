"""D-PSGD (Lian et al., "Can Decentralized Algorithms Outperform Centralized Algorithms?",
NeurIPS 2017).

One local gradient step per round, taken at the pre-gossip point and added after mixing:
    x_i <- sum_j W_ij x_j - lr g_i(x_i)
(with Q gossip steps: W^Q in place of W). local.local_steps is ignored (always 1).
"""
from .base import Gossip
from .registry import ALGORITHMS


@ALGORITHMS.register("dpsgd")
class DPSGD(Gossip):
    name = "dpsgd"
    label = "D-PSGD"
    family = "sgd"
    needs_before = True
    mixes = "before"

    def local_steps(self, configured):
        return 1
