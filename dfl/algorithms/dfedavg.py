"""DFedAvg (Sun et al., "Decentralized Federated Averaging", TPAMI 2022, arXiv 2104.11375).

Each client runs K local SGD steps, then the clients average with their neighbours:
    x_i <- sum_j W_ij x_j   (Q times; Q = algorithm.gossip_steps).
"""
from .base import Gossip
from .registry import ALGORITHMS


@ALGORITHMS.register("dfedavg")
class DFedAvg(Gossip):
    name = "dfedavg"
    label = "DFedAvg"
    family = "sgd"
