"""FedProx's synthetic(alpha, beta) data with its natural per-client partition.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (FedProx), section 5.1 and
its generator ``data/synthetic_*/generate_niid.py``. For client k:

    u_k ~ N(0, alpha),  W_k ~ N(u_k, 1) in R^{d x 10},  b_k ~ N(u_k, 1) in R^10
    B_k ~ N(0, beta),   v_k ~ N(B_k, 1) in R^d
    x ~ N(v_k, Sigma),  Sigma = diag(j^-1.2), j = 1..d
    y = argmax softmax(W_k^T x + b_k)

(alpha and beta are standard deviations, as in the reference code.) alpha moves each client's
model, beta its inputs; since u_k shifts every class score alike, the label skew between clients
comes mostly from beta. Client sizes are log-normal with mean ``samples`` (sigma 0.5, at least
MIN_SAMPLES). Each client's samples are split (seeded) into its training part and its part of
the global test set. Features are left unnormalised, as in FedProx.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .datasets import DATASETS, Pooled

NUM_CLASSES = 10
SIZE_SIGMA = 0.5
MIN_SAMPLES = 10


def generate(num_clients: int, alpha: float, beta: float, dim: int, samples: int,
             rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per client (x: (n_k, dim) float64, y: (n_k,) int64), FedProx's synthetic(alpha, beta)."""
    mu = np.log(samples) - SIZE_SIGMA ** 2 / 2  # so that E[size] = samples
    sizes = np.maximum(MIN_SAMPLES, np.rint(rng.lognormal(mu, SIZE_SIGMA, num_clients))).astype(np.int64)
    mean_w = rng.normal(0.0, alpha, num_clients)
    shift = rng.normal(0.0, beta, num_clients)
    scale = np.arange(1, dim + 1, dtype=np.float64) ** -0.6  # sqrt of Sigma_jj = j^-1.2
    out = []
    for k in range(num_clients):
        v = rng.normal(shift[k], 1.0, dim)
        w = rng.normal(mean_w[k], 1.0, (dim, NUM_CLASSES))
        b = rng.normal(mean_w[k], 1.0, NUM_CLASSES)
        x = v + rng.standard_normal((sizes[k], dim)) * scale
        y = np.argmax(x @ w + b, axis=1)  # softmax is monotone
        out.append((x, y.astype(np.int64)))
    return out


@DATASETS.register("synthetic")
def load_synthetic(root: Any = None, seed: int = 0, test_fraction: float = 0.2, *, num_clients: int = 16,
                   alpha: float = 1.0, beta: float = 1.0, dim: int = 60, samples: int = 200) -> Pooled:
    """synthetic(alpha, beta) pooled; meta["partition"] holds each client's indices into x_train."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
    xs_tr, ys_tr, xs_te, ys_te, parts = [], [], [], [], []
    offset = 0
    for x, y in generate(num_clients, alpha, beta, dim, samples, rng):
        perm = rng.permutation(len(y))
        n_test = min(len(y) - 1, max(1, int(round(test_fraction * len(y)))))
        tr, te = perm[n_test:], perm[:n_test]
        xs_tr.append(x[tr]), ys_tr.append(y[tr]), xs_te.append(x[te]), ys_te.append(y[te])
        parts.append(np.arange(offset, offset + len(tr), dtype=np.int64))
        offset += len(tr)
    meta = {"input_shape": (dim,), "num_classes": NUM_CLASSES, "mean": None, "std": None,
            "source": f"synthetic({alpha}, {beta})", "partition": parts}

    def t(a: list[np.ndarray], dtype: Any) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(a).astype(dtype))

    return t(xs_tr, np.float32), t(ys_tr, np.int64), t(xs_te, np.float32), t(ys_te, np.int64), meta
