"""Algorithms: what a round does around local training. One small file each.

Decentralized: dpsgd, dfedavg, dfedavgm, dfedsam, dfedsam_mgs. Centralized baselines on the same
clients: fedavg, fedsam, mofedsam; and pooled (one model on all data, the upper bound).
Adding one: subclass Gossip or ServerAveraging in a new file, register it, import it here.
"""
from . import dfedavg, dfedavgm, dfedsam, dpsgd, fedavg, mofedsam, pooled  # noqa: F401 (registers)
from .base import Algorithm, Correction, Gossip, RoundContext, ServerAveraging
from .registry import ALGORITHMS

__all__ = ["ALGORITHMS", "Algorithm", "Correction", "Gossip", "RoundContext", "ServerAveraging"]
