"""Partitioners: split a labelled pool among clients (iid, dirichlet, dirichlet_prior, shards, quantity).

Every partitioner maps ``(labels, num_clients, rng, **options)`` to a list of ``num_clients``
int64 index arrays (sorted, disjoint; all of the pool but for dirichlet_prior's remainder).
Use :func:`partition`, which makes the numpy Generator from the seed, checks the sizes and
passes each partitioner only the options it takes, so one options dict built from
``DataConfig`` fits every scheme.

- iid: a random permutation cut into near-equal parts.
- dirichlet: label skew; for each class, proportions over clients ~ Dir(alpha), resampled until
  every client holds >= min_size samples (Hsu et al. 2019, "Measuring the Effects of Non-Identical
  Data Distribution"; the loop of NIID-Bench, Li et al. 2022). Smaller alpha = more skew.
- dirichlet_prior: equal shard sizes, each client's label prior ~ Dir(alpha), samples dealt one
  by one from the clients' priors without replacement (DisPFL, Dai et al. 2022; the split of
  the DFedSAM paper). The N mod num_clients samples left over go to nobody.
- shards: pathological non-iid of FedAvg (McMahan et al. 2017): the pool is sorted by label and
  cut into num_clients * shards_per_client single-class shards, dealt at random, so a client
  sees at most shards_per_client classes.
- quantity: iid labels, client sizes ~ log-normal(0, sigma) shares on top of min_size each.
"""
from __future__ import annotations

import bisect
import inspect
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partition")

MAX_DIRICHLET_TRIES = 1000


def partition(labels: np.ndarray, num_clients: int, scheme: str, seed: int, **opts: Any) -> list[np.ndarray]:
    """Split sample indices among clients.

    Args:
        labels: (N,) integer labels of the pool.
        num_clients: number of clients (>= 1, <= N).
        scheme: a name in PARTITIONERS (iid, dirichlet, dirichlet_prior, shards, quantity).
        seed: seed of the numpy Generator; equal seeds give equal partitions.
        **opts: alpha, min_size, shards_per_client, sigma; each scheme takes the ones it uses.

    Returns:
        num_clients sorted int64 index arrays, disjoint, none empty.
    """
    fn = PARTITIONERS[scheme]
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"partition: labels must be 1-D, got shape {labels.shape}")
    n = int(labels.shape[0])
    if num_clients < 1:
        raise DataError(f"partition: num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise DataError(f"partition {scheme!r}: {num_clients} clients but only {n} samples; "
                        f"lower data.num_clients to <= {n}")
    known = {p for name in PARTITIONERS.names() for p in inspect.signature(PARTITIONERS[name]).parameters}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(f"partition: unknown option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(known - {'labels', 'num_clients', 'rng'}))}")
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in opts.items() if k in accepted}
    parts = fn(labels, num_clients, np.random.default_rng(seed), **kwargs)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _check_min_size(scheme: str, n: int, num_clients: int, min_size: int) -> None:
    if min_size < 1:
        raise DataError(f"partition {scheme!r}: min_size must be >= 1, got {min_size}")
    if num_clients * min_size > n:
        raise DataError(f"partition {scheme!r}: {num_clients} clients x min_size {min_size} = "
                        f"{num_clients * min_size} > {n} samples; lower data.num_clients or data.min_size")


@PARTITIONERS.register("iid")
def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation cut into num_clients near-equal parts."""
    return np.array_split(rng.permutation(len(labels)), num_clients)


@PARTITIONERS.register("dirichlet")
def dirichlet(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
              alpha: float = 0.5, min_size: int = 10) -> list[np.ndarray]:
    """Label skew: per class, client shares ~ Dir(alpha); redraw until all have >= min_size.

    A client already holding N / num_clients samples gets no more of later classes (as in the
    common FL code), which keeps sizes from exploding at small alpha.
    """
    if alpha <= 0:
        raise DataError(f"partition 'dirichlet': alpha must be > 0, got {alpha}")
    n = len(labels)
    _check_min_size("dirichlet", n, num_clients, min_size)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    cap = n / num_clients
    for _ in range(MAX_DIRICHLET_TRIES):
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, dtype=np.int64)
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, alpha))
            p = p * (sizes < cap)
            total = p.sum()
            p = p / total if total > 0 else np.full(num_clients, 1.0 / num_clients)
            cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
            for i, chunk in enumerate(np.split(idx, cuts)):
                buckets[i].append(chunk)
                sizes[i] += len(chunk)
        if sizes.min() >= min_size:
            return [np.concatenate(b) for b in buckets]
    raise DataError(f"partition 'dirichlet': no draw in {MAX_DIRICHLET_TRIES} tries gave all {num_clients} "
                    f"clients >= min_size {min_size} of {n} samples at alpha={alpha}; "
                    f"raise data.alpha or lower data.min_size / data.num_clients")


@PARTITIONERS.register("dirichlet_prior")
def dirichlet_prior(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
                    alpha: float = 0.5) -> list[np.ndarray]:
    """Equal shards, each client's label prior ~ Dir(alpha): the 'dir' split of DisPFL / DFedSAM.

    Every client gets m = N // num_clients samples (the N mod num_clients left over go to
    nobody) and a prior p_i ~ Dir(alpha * 1_K) over the K classes. Sample by sample, a client
    is picked uniformly among those still short of m and a class c ~ p_i restricted to the
    classes with samples left,

        P(c | i) = p_ic [n_c > 0] / sum_c' p_ic' [n_c' > 0],

    and the client takes one not yet dealt sample of class c (without replacement: the shards
    are disjoint). This is rong-dai/DisPFL's ``partition_data(..., 'dir')`` (Dai et al. 2022),
    whose redraw of an exhausted class is rejection sampling from the same renormalised prior;
    woodenchild95/FL-Simulator refills an exhausted class instead, so its shards can share
    samples. A client whose prior has underflowed to 0 on every class left draws uniformly
    among them (the reference would loop forever). Smaller alpha = more skew.
    """
    if alpha <= 0:
        raise DataError(f"partition 'dirichlet_prior': alpha must be > 0, got {alpha}")
    m = len(labels) // num_clients
    classes = np.unique(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    prior = rng.dirichlet(np.full(len(classes), alpha), size=num_clients)
    live = np.ones(len(classes), dtype=bool)
    cum = np.cumsum(prior, axis=1).tolist()  # per client, over the classes with samples left
    pick_client, pick_class = rng.random(num_clients * m), rng.random(num_clients * m)
    open_clients = list(range(num_clients))
    need = [m] * num_clients
    shards: list[list[int]] = [[] for _ in range(num_clients)]
    for t in range(num_clients * m):
        slot = int(pick_client[t] * len(open_clients))
        i = open_clients[slot]
        row = cum[i]
        if row[-1] > 0:
            c = min(bisect.bisect_right(row, pick_class[t] * row[-1]), len(row) - 1)
            while not live[c]:  # a zero-width step at the top end: the last class with samples left
                c -= 1
        else:
            c = int(np.flatnonzero(live)[int(pick_class[t] * live.sum())])
        shards[i].append(pools[c].pop())
        if not pools[c]:  # class c ran out: renormalise every prior over the classes left
            live[c] = False
            cum = np.cumsum(prior * live, axis=1).tolist()
        need[i] -= 1
        if need[i] == 0:
            open_clients.pop(slot)
    return [np.asarray(p, dtype=np.int64) for p in shards]


def _shards_per_class(counts: np.ndarray, total: int) -> np.ndarray:
    """Shards per class, proportional to class size (largest remainder), each class >= 1."""
    k = len(counts)
    share = counts / counts.sum() * (total - k)
    out = np.floor(share).astype(np.int64) + 1
    rest = total - out.sum()
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    out[order[:rest]] += 1
    # a class cannot be cut into more shards than it has samples: move the excess elsewhere
    while np.any(out > counts):
        over = np.flatnonzero(out > counts)
        excess = int((out[over] - counts[over]).sum())
        out[over] = counts[over]
        room = counts - out
        for i in np.argsort(-room, kind="stable")[:excess]:
            out[i] += 1
    return out


@PARTITIONERS.register("shards")
def shards(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
           shards_per_client: int = 2) -> list[np.ndarray]:
    """Pathological non-iid: single-class shards, shards_per_client dealt to each client."""
    if shards_per_client < 1:
        raise DataError(f"partition 'shards': shards_per_client must be >= 1, got {shards_per_client}")
    n = len(labels)
    total = num_clients * shards_per_client
    classes, counts = np.unique(labels, return_counts=True)
    if total > n:
        raise DataError(f"partition 'shards': {num_clients} clients x {shards_per_client} shards = {total} "
                        f"> {n} samples; lower data.num_clients or data.shards_per_client")
    if total < len(classes):
        raise DataError(f"partition 'shards': {num_clients} clients x {shards_per_client} shards = {total} "
                        f"< {len(classes)} classes, so some class would get no shard; "
                        f"raise data.shards_per_client to >= {-(-len(classes) // num_clients)}")
    pieces: list[np.ndarray] = []
    for c, k in zip(classes, _shards_per_class(counts, total)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        pieces.extend(np.array_split(idx, k))
    order = rng.permutation(total)
    return [np.concatenate([pieces[j] for j in order[i * shards_per_client:(i + 1) * shards_per_client]])
            for i in range(num_clients)]


@PARTITIONERS.register("quantity")
def quantity(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
             sigma: float = 1.0, min_size: int = 10) -> list[np.ndarray]:
    """Quantity skew: iid labels, sizes = min_size + log-normal(0, sigma) shares of the rest."""
    if sigma < 0:
        raise DataError(f"partition 'quantity': sigma must be >= 0, got {sigma}")
    n = len(labels)
    _check_min_size("quantity", n, num_clients, min_size)
    w = rng.lognormal(0.0, sigma, num_clients)
    share = w / w.sum() * (n - num_clients * min_size)
    sizes = np.floor(share).astype(np.int64) + min_size
    rest = n - int(sizes.sum())
    sizes[np.argsort(-(share - np.floor(share)), kind="stable")[:rest]] += 1
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])
