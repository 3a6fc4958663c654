"""Counter-based random streams: one per (seed, stream, round, client), never a global generator.

A client's draws depend only on (seed, client id, round), not on the backend, the chunk size or
which actor hosts it, so the engines can be checked against each other. The hash is splitmix64
(Steele et al. 2014) applied to the packed counter, vectorised with numpy's wrapping uint64.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: Named streams, so that different uses of randomness never share draws.
BATCHES, PARTICIPATION, FAULTS, EVAL = 1, 2, 3, 4


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _key(*parts: int | np.ndarray) -> np.ndarray:
    h = np.uint64(0)
    with np.errstate(over="ignore"):
        for p in parts:
            h = _mix(h + _GOLDEN + np.asarray(p, dtype=np.uint64))
    return h


def uniform(seed: int, stream: int, round_: int, clients: np.ndarray, count: int) -> np.ndarray:
    """(len(clients), count) float64 uniforms in [0, 1) for the given clients' streams in a round."""
    clients = np.asarray(clients, dtype=np.uint64).reshape(-1, 1)
    j = np.arange(count, dtype=np.uint64).reshape(1, -1)
    bits = _key(seed, stream, round_, clients, j)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def batch_indices(seed: int, round_: int, clients: np.ndarray, sizes: np.ndarray,
                  steps: int, batch: int) -> np.ndarray:
    """Local sample indices (len(clients), steps, batch), drawn with replacement from each shard.

    Client c's batch k of round t uses only stream (seed, BATCHES, t, c).
    """
    u = uniform(seed, BATCHES, round_, clients, steps * batch)
    idx = np.floor(u * np.asarray(sizes, dtype=np.float64).reshape(-1, 1)).astype(np.int64)
    return idx.reshape(len(clients), steps, batch)


def participation(seed: int, round_: int, n: int, fraction: float) -> np.ndarray:
    """Boolean mask of the round's active clients: the max(1, round(fraction * n)) lowest draws."""
    if fraction >= 1.0:
        return np.ones(n, dtype=bool)
    m = max(1, int(round(fraction * n)))
    u = uniform(seed, PARTICIPATION, round_, np.arange(n), 1)[:, 0]
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(u, kind="stable")[:m]] = True
    return mask
