"""The default engine: all clients of a chunk take each local step at once.

For a chunk of c clients, a local step is ``torch.func.vmap`` of the optimizer's ``gradient``
(functional_call + grad inside; SAM's ascent and the other variants' directions too) over the
stacked parameters (c, *shape), the optimizer state and the clients' batches (c, B, ...), then
the SGD descent (``descend_``) applied in place to the chunk's rows of the parameter bank: the
update is elementwise, so it needs no vmap, and in place it allocates nothing (on CPU a round of
small models is bound by these memory passes). Clients that are inactive, or that have done
their own number of steps, keep their parameters and state (torch.where on a mask), so one vmap
call serves clients of different shard sizes. Chunks are sized from free memory.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from .. import optim
from ..algorithms import Correction
from ..optim.sgd import FunctionalSGD
from . import malloc
from .base import ENGINES, Trainer, host_to_device

#: Fraction of free memory a chunk may use.
MEMORY_FRACTION = 0.25


def _where(mask: torch.Tensor, new: Any, old: Any) -> Any:
    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)
    return tree_map(pick, new, old)


def clip_rows_(grads: dict[str, torch.Tensor], max_norm: float) -> None:
    """Scale each client's direction (row of the (c, *shape) leaves) to global L2 norm at most
    ``max_norm``, in place: torch.nn.utils.clip_grad_norm_'s rule, g * min(1, max / (||g|| + 1e-6))."""
    norms = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads.values()], 1), dim=1)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads.values():
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def free_memory(device: torch.device) -> int:
    """Bytes free on the device (CUDA: mem_get_info; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def activation_numel(model: torch.nn.Module, sample: torch.Tensor) -> int:
    """Numbers stored by one sample's forward pass (sum of all module outputs)."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return total


@ENGINES.register("vectorized")
class VectorizedTrainer(Trainer):
    """Local training of all clients with torch.func.vmap, in chunks of clients."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.device.type == "cpu":
            malloc.tune()  # step tensors reused from the heap instead of fresh mmap'd pages
        opt = self.opt = optim.make(self.optimizer, **self.hparams)
        n, dim = self.data.n, self.layout.size
        if not self.chunk_size:
            per_client = 4 * (12 * dim + 4 * self.data.batch_size
                              * activation_numel(self.model, self.data.x[:1]))
            self.chunk_size = int(max(1, min(n, MEMORY_FRACTION * free_memory(self.device) // per_client)))
        # Every client starts from the model's initial weights (MESA's EMA starts there too).
        params = {k: p.detach() for k, p in self.model.named_parameters()}
        init_kw = dict(num_samples=int(self.data.sizes.max()), num_classes=self.data.num_classes)
        one = self.opt.init(params, **init_kw)
        # reset_state: a fresh state per round and chunk (opt.init at the round-start rows), none kept
        self.state = (None if self.local.reset_state
                      else tree_map(lambda t: t.unsqueeze(0).repeat(n, *([1] * t.dim())).clone(), one))
        self._init = vmap(lambda p: opt.init(p, **init_kw))
        self._progress: Optional[optim.Progress] = None
        model, opt = self.model, self.opt

        def client_gradient(p, s, x, y, index):
            obj = optim.Objective(forward=lambda q: functional_call(model, q, (x,)), targets=y, index=index)
            return opt.gradient(p, s, obj, self._progress)

        # a step = vmap(gradient), then the SGD descent in place on the bank's rows (elementwise,
        # so it needs no vmap), then vmap(after_descent) where the optimizer has one (MESA)
        self._gradient = vmap(client_gradient)
        self._after = (vmap(opt.after_descent)
                       if type(opt).after_descent is not FunctionalSGD.after_descent else None)
        self._begin = vmap(opt.begin_round)

    def train(self, bank, active, steps, lr, round_, correction: Optional[Correction]):
        n = self.data.n
        losses = np.full(n, np.nan)
        kmax = int(steps[active].max()) if active.any() else 0
        self._progress = self.progress(lr, round_)
        for start in range(0, n, self.chunk_size):
            clients = np.arange(start, min(n, start + self.chunk_size))
            if not active[clients].any():
                continue
            losses[clients] = self._train_chunk(bank, clients, active, steps, kmax, lr, round_, correction)
        return bank, losses

    def _train_chunk(self, bank, clients, active, steps, kmax, lr, round_, correction):
        sl = slice(int(clients[0]), int(clients[-1]) + 1)
        dev = self.device
        params = self.layout.unflatten(bank[sl])  # views: the descent writes into the bank's rows
        if self.state is None:  # reset_state: the reference code's fresh optimizer every round
            state = tree_map(lambda t: t.contiguous(), self._init(params))
        else:
            state = tree_map(lambda t: t[sl], self.state)
        state = self._begin(params, state)
        local, glob = self.data.batches(clients, round_, kmax)
        act_np, todo_np = active[clients], steps[clients]
        act = host_to_device(act_np, dev)
        todo = host_to_device(todo_np, dev)
        corr = None
        if correction is not None:
            d = correction.direction.to(dev)
            d = d.expand(len(clients), -1) if d.dim() == 1 else d[sl]
            corr = self.layout.unflatten(d)
        loss_sum = torch.zeros(len(clients), dtype=torch.float64, device=dev)
        for k in range(kmax):
            g = glob[:, k]
            x = self.data.inputs(g, clients, round_, k)
            grads, new_s, loss = self._gradient(params, state, x, self.data.y[g], local[:, k])
            if corr is not None:  # d <- grad_scale * d + direction (MoFedSAM), before the clip
                for name, g in grads.items():
                    g.mul_(correction.grad_scale).add_(corr[name])
            if self.local.clip_grad_norm:
                clip_rows_(grads, self.local.clip_grad_norm)
            if (act_np & (k < todo_np)).all():  # the common case: no client to hold back
                mask = None
                state = new_s
                loss_sum += loss.double()
            else:
                mask = act & (k < todo)
                state = _where(mask, new_s, state)
                loss_sum += torch.where(mask, loss.double(), torch.zeros_like(loss_sum))
            state = self.opt.descend_(params, grads, state, lr, mask)
            if self._after is not None:
                new_s = self._after(params, state)
                state = new_s if mask is None else _where(mask, new_s, state)
        if self.state is not None:
            tree_map(lambda full, part: full[sl].copy_(part), self.state, state)
        out = (loss_sum / todo.clamp(min=1)).cpu().numpy()
        out[~active[clients]] = np.nan
        return out

    def state_dict(self):
        """The kept optimizer state; empty with reset_state (each round starts from opt.init)."""
        return {} if self.state is None else {"opt_state": self.state}

    def load_state_dict(self, state):
        if self.state is not None and "opt_state" in state:
            tree_map(lambda full, saved: full.copy_(saved), self.state, state["opt_state"])
