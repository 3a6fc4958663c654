"""Metrics of a round: consensus distance, accuracy of the averaged and local models, communication.

Definitions (as README states them):
    consensus Xi = (1/n) sum_i ||x_i - x_bar||^2 over all (flattened) parameters;
    test accuracy of x_bar = mean of the client models; local accuracy: each client's model on its
    held-out split, mean and std over clients;
    gossip bytes per client per round = Q * degree * model bytes; CFL: 2 * model bytes per active client.

``round_row`` and ``evaluated_row`` build every runtime's metrics rows (`dfl run`, the Flower
server apps), so that the columns and their meaning are the same everywhere.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

import topologies

from .bank import Layout


#: Entries per block of rows in consensus_distance (256k float64 = 2 MB).
CONSENSUS_BLOCK = 2**18


def consensus_distance(X: torch.Tensor) -> float:
    """Xi = (1/n) sum_i ||x_i - x_bar||^2 for X of shape (n, d) (contract).

    >>> consensus_distance(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    1.0
    """
    X = X.reshape(X.shape[0], -1)
    n, d = X.shape
    if torch.equal(X, X[:1].expand_as(X)):  # one float32 pass; after FedAvg or exact consensus
        return 0.0
    # float64 throughout (Xi is tiny next to ||x||^2), converted a few rows at a time so that no
    # float64 copy of the bank is made and the converted rows stay in cache
    rows = max(1, CONSENSUS_BLOCK // max(1, d))
    blocks = [X[r0:r0 + rows] for r0 in range(0, n, rows)]
    mean = torch.zeros(d, dtype=torch.float64, device=X.device)
    for b in blocks:
        mean += b.double().sum(0)
    mean /= n
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for b in blocks:
        diff = b.to(torch.float64, copy=True).sub_(mean)  # a copy: X may be float64 already
        total += torch.einsum("ij,ij->", diff, diff)
    return float(total / n)


def gossip_mb(degrees: np.ndarray, active: np.ndarray | None, steps: int, model_bytes: int) -> float:
    """MB sent in one gossip round: every client (active or relaying) sends Q * degree models."""
    return float(steps * degrees.sum() * model_bytes) / 1e6


def server_mb(num_active: int, model_bytes: int) -> float:
    """MB moved in one centralized round: each active client downloads and uploads the model."""
    return float(2 * num_active * model_bytes) / 1e6


def round_row(*, train_loss: float, gap: float, gossip_steps: int, comm_mb: float, active_clients: int,
              lr: float, **more: Any) -> dict[str, Any]:
    """The training columns of a round's metrics row (the keys README lists), then ``more``.

    ``gap`` is the spectral gap of the round's W (1 for server averaging); effective_gap is that
    of W^Q (topologies.effective_gap)."""
    return {"train_loss": train_loss, "spectral_gap": gap, "effective_gap": topologies.effective_gap(gap, gossip_steps),
            "comm_mb": comm_mb, "active_clients": active_clients, "lr": lr, **more}


def local_accuracy(accs: Sequence[float]) -> dict[str, float]:
    """local_test_acc and local_test_acc_std: mean and std over the clients that have a local
    test set (nan entries are left out; nan when there is none)."""
    arr = np.asarray(accs, dtype=np.float64)
    if not len(arr):
        return {"local_test_acc": float("nan"), "local_test_acc_std": float("nan")}
    return {"local_test_acc": float(np.nanmean(arr)), "local_test_acc_std": float(np.nanstd(arr))}


def evaluated_row(round_: int, test: tuple[float, float], local: Sequence[float], consensus: float,
                  training: dict[str, Any]) -> dict[str, Any]:
    """A whole metrics row: ``round_`` (rounds done), the (accuracy, loss) of the mean model on the
    test set, the clients' local accuracies, the ``training`` columns (``round_row``) and consensus."""
    return {"round": round_, "test_acc": test[0], "test_loss": test[1], **local_accuracy(local), **training,
            "consensus": consensus}


def evaluate(model: torch.nn.Module, layout: Layout, row: torch.Tensor, x: torch.Tensor,
             y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of one flat parameter row on (x, y)."""
    params = {k: v[0] for k, v in layout.unflatten(row[None]).items()}
    correct, loss = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            logits = functional_call(model, params, (x[s:s + batch],))
            loss += float(F.cross_entropy(logits, y[s:s + batch], reduction="sum"))
            correct += float((logits.argmax(1) == y[s:s + batch]).sum())
    n = max(len(x), 1)
    return correct / n, loss / n


def evaluate_clients(model: torch.nn.Module, layout: Layout, bank: torch.Tensor,
                     x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor,
                     chunk: int) -> np.ndarray:
    """Accuracy of every client's model on its own padded sample set, batched over clients.

    Args:
        bank: (n, d) client models; x, y: the sample pool; idx: (n, m) indices into the pool,
        padded; mask: (n, m) True on real entries; chunk: clients per vmap call.
    Returns:
        (n,) accuracies (nan for a client with no samples).
    """
    def one(p, xi, yi, mi):
        logits = functional_call(model, p, (xi,))
        hit = (logits.argmax(-1) == yi) & mi
        return hit.sum() / mi.sum().clamp(min=1)

    f = vmap(one)
    out = []
    with torch.no_grad():
        for s in range(0, bank.shape[0], chunk):
            sl = slice(s, s + chunk)
            out.append(f(layout.unflatten(bank[sl]), x[idx[sl]], y[idx[sl]], mask[sl]))
    acc = torch.cat(out).double().cpu().numpy()
    acc[(mask.sum(1) == 0).cpu().numpy()] = np.nan
    return acc


def sharpness(model: torch.nn.Module, layout: Layout, row: torch.Tensor, x: torch.Tensor,
              y: torch.Tensor, rho: float) -> float:
    """SAM sharpness: L(w + rho g/||g||) - L(w) on (x, y), g the gradient of L at w."""
    params = {k: v[0].detach().requires_grad_(True) for k, v in layout.unflatten(row[None]).items()}
    loss_at: Callable[[dict], torch.Tensor] = lambda p: F.cross_entropy(functional_call(model, p, (x,)), y)
    loss = loss_at(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads)) + 1e-12
    with torch.no_grad():
        moved = {k: p + rho * g / norm for (k, p), g in zip(params.items(), grads)}
        return float(loss_at(moved) - loss)
