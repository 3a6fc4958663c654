"""DFedAvgM (Sun et al., "Decentralized Federated Averaging", TPAMI 2022): DFedAvg whose local
optimizer is SGD with heavy-ball momentum beta = algorithm.beta:
    v <- beta v + g;  x <- x - lr v;   then x_i <- sum_j W_ij x_j (Q times).
"""
from .base import Gossip
from .registry import ALGORITHMS


@ALGORITHMS.register("dfedavgm")
class DFedAvgM(Gossip):
    name = "dfedavgm"
    label = "DFedAvgM"
    family = "sgd"

    def optimizer_overrides(self):
        return {"momentum": self.cfg.algorithm.beta}
