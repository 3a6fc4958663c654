"""DFedSAM (Shi et al., "Improving the Model Consistency of Decentralized Federated Learning",
ICML 2023, arXiv 2302.04083).

Each client runs K local steps of SAM (or any SAM-family optimizer: DFedASAM, DFedGSAM, DFedSAF
come free), then one gossip step x_i <- sum_j W_ij x_j. With Q > 1 gossip steps per round this is
DFedSAM-MGS (registered separately so the name says what runs): its consensus bound has lambda^Q
in place of lambda, lambda = 1 - spectral gap.
"""
from ..errors import ConfigError
from .base import Gossip
from .registry import ALGORITHMS


@ALGORITHMS.register("dfedsam")
class DFedSAM(Gossip):
    name = "dfedsam"
    label = "DFedSAM"
    family = "sam"


@ALGORITHMS.register("dfedsam_mgs")
class DFedSAMMGS(DFedSAM):
    name = "dfedsam_mgs"
    label = "DFedSAM-MGS"

    def __init__(self, cfg, num_clients, dim):
        super().__init__(cfg, num_clients, dim)
        if cfg.algorithm.gossip_steps < 2:
            raise ConfigError("algorithm.gossip_steps: DFedSAM-MGS needs Q >= 2 gossip steps, "
                              f"got {cfg.algorithm.gossip_steps} (Q = 1 is plain 'dfedsam')")
