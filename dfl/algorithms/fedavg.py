"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017) and FedSAM (Qu et al., "Generalized Federated Learning via Sharpness Aware
Minimization", ICML 2022; also Caldarola et al. 2022).

Active clients start from the global model x, run K local steps (SGD for FedAvg, a SAM-family
optimizer for FedSAM), and the server averages: x <- x + server_lr * mean_i (x_i - x).
"""
from .base import ServerAveraging
from .registry import ALGORITHMS


@ALGORITHMS.register("fedavg")
class FedAvg(ServerAveraging):
    name = "fedavg"
    label = "FedAvg"
    family = "sgd"


@ALGORITHMS.register("fedsam")
class FedSAM(ServerAveraging):
    name = "fedsam"
    label = "FedSAM"
    family = "sam"
