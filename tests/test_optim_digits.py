"""dfl.optim: every torch.optim class trains a small CNN on sklearn's digits (8x8, 10 classes)."""
from __future__ import annotations

import time

import pytest
import torch

import dfl.optim as optim
from dfl.engines.serial import closure

STEPS, BATCH, LR = 300, 64, 0.05
THRESHOLD = 0.85  # test accuracy on 397 held-out digits; every method reaches >= 0.93


def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    return X[train], y[train], X[test], y[test]


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10),
    )


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions: one intra-op thread is several times faster than two on a busy box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def build(name, model, n):
    common = dict(lr=LR, momentum=0.9, weight_decay=5e-4)
    if name == "sgd":
        return optim.SGD(model.parameters(), **common)
    if name == "saf":
        return optim.SAF(model.parameters(), num_samples=n, num_classes=10, **common)
    if name == "mesa":
        return optim.MESA(model, **common)
    if name == "asam":  # named: T_w on the weight tensors only, as SamsungLabs/ASAM
        return optim.ASAM(model.named_parameters(), **common)
    cls = {"sam": optim.SAM, "gsam": optim.GSAM}[name]
    return cls(model.parameters(), **common)


@pytest.mark.parametrize("name", ["sgd", "sam", "asam", "gsam", "saf", "mesa"])
def test_trains_digits_cnn(name):
    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits()
    model = cnn()
    opt = build(name, model, len(ytr))
    g = torch.Generator().manual_seed(1)
    order = torch.cat([torch.randperm(len(ytr), generator=g) for _ in range(STEPS * BATCH // len(ytr) + 1)])
    t0 = time.perf_counter()
    for s in range(STEPS):
        idx = order[s * BATCH:(s + 1) * BATCH]
        opt.step(closure(model, opt, xtr[idx], ytr[idx], idx))  # SAF / MESA terms as in the serial engine
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    print(f"{name}: test acc {acc:.3f} in {time.perf_counter() - t0:.1f}s")
    assert acc >= THRESHOLD
