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
BATCHES, PARTICIPATION, FAULTS, EVAL, AUGMENT, COMPRESS = 1, 2, 3, 4, 5, 6
#: Device speeds and link figures of the system model (dfl.system), drawn once per client / link.
SYSTEM = 7


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
    """Local sample indices (len(clients), steps, batch): each client walks through its shard in
    random order, epoch after epoch, as a shuffling DataLoader does (no sample is seen twice in an
    epoch), and the round's steps * batch draws are the first positions of that walk.

    Epoch e of client c of round t is the permutation that sorts the uniforms of stream
    (seed, BATCHES, t, c) at positions e * size_c + r, r < size_c: it depends only on the client's
    own id and shard size, never on which other clients share the call. A batch that crosses an
    epoch's end takes the rest from the next epoch (the DataLoader would return a short batch).
    """
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    clients = np.asarray(clients, dtype=np.uint64).reshape(-1, 1, 1)
    total = steps * batch
    epochs = -(-total // sizes)                                  # per client
    e_max, s_max = int(epochs.max(initial=1)), int(sizes.max(initial=1))
    e = np.arange(e_max, dtype=np.int64).reshape(1, -1, 1)
    r = np.arange(s_max, dtype=np.int64).reshape(1, 1, -1)
    s = sizes.reshape(-1, 1, 1)
    pos = (e * s + r).astype(np.uint64)
    keys = _key(seed, BATCHES, round_, clients, pos)
    keys = np.where(r < s, keys, np.uint64(np.iinfo(np.uint64).max))   # padding sorts last
    perm = np.argsort(keys, axis=2, kind="stable")               # (c, e_max, s_max)
    j = np.arange(total, dtype=np.int64).reshape(1, -1)
    flat_e, flat_r = j // sizes.reshape(-1, 1), j % sizes.reshape(-1, 1)
    idx = perm[np.arange(len(sizes)).reshape(-1, 1), flat_e, flat_r]
    return idx.reshape(len(sizes), steps, batch)


def augment_uniforms(seed: int, round_: int, clients: np.ndarray, step: int, batch: int,
                     fields: int) -> np.ndarray:
    """(len(clients), batch, fields) float64 uniforms in [0, 1) for the augmentation of step ``step``.

    Field f of sample b is keyed by (seed, AUGMENT, round, client, step * batch + b, f): a
    client's draws do not depend on which other clients are drawn in the same call.
    """
    clients = np.asarray(clients, dtype=np.uint64).reshape(-1, 1, 1)
    b = (np.uint64(step * batch) + np.arange(batch, dtype=np.uint64)).reshape(1, -1, 1)
    f = np.arange(fields, dtype=np.uint64).reshape(1, 1, -1)
    bits = _key(seed, AUGMENT, round_, clients, b, f)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def participation(seed: int, round_: int, n: int, fraction: float) -> np.ndarray:
    """Boolean mask of the round's active clients: the max(1, round(fraction * n)) lowest draws."""
    if fraction >= 1.0:
        return np.ones(n, dtype=bool)
    m = max(1, int(round(fraction * n)))
    u = uniform(seed, PARTICIPATION, round_, np.arange(n), 1)[:, 0]
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(u, kind="stable")[:m]] = True
    return mask
