"""Pooled-data training: one model on all clients' data, the upper bound of every FL method.

The federation collapses to one client holding the union of the shards; each round it takes K
steps of the configured optimizer on batches of num_clients * batch_size samples, i.e. the
same number of samples per round as the whole federation.
"""
from .base import ServerAveraging
from .registry import ALGORITHMS


@ALGORITHMS.register("pooled")
class Pooled(ServerAveraging):
    name = "pooled"
    label = "Pooled"
    pooled = True
    any_optimizer = True

    def comm_mb(self, ctx, model_bytes):
        return 0.0
