"""Algorithms: what a round does around local training. One small file each.

Decentralized: dpsgd, dfedavg, dfedavgm, dfedsam, dfedsam_mgs. Centralized baselines on the same
clients: fedavg, fedsam, mofedsam; and pooled (one model on all data, the upper bound).
Adding one: subclass Gossip or ServerAveraging (centralized) in a file of its own, declare its
``label`` and optimizer ``family`` ("sgd" or "sam"), register it and import the file here (or
anywhere before the run): labels, run directories and the optimizer check read the class
(dfl.methods), no list of names elsewhere.
"""
from . import dfedavg, dfedavgm, dfedsam, dpsgd, fedavg, mofedsam, pooled  # noqa: F401 (registers)
from .base import Algorithm, Correction, Gossip, RoundContext, ServerAveraging
from .registry import ALGORITHMS

__all__ = ["ALGORITHMS", "Algorithm", "Correction", "Gossip", "RoundContext", "ServerAveraging"]
