"""The default engine: all clients of a chunk take each local step at once.

For a chunk of c clients, a local step is ``torch.func.vmap`` of the optimizer's ``gradient``
(functional_call + grad inside; SAM's ascent and the other variants' directions too) over the
stacked parameters (c, *shape), the optimizer state and the clients' batches (c, B, ...), then
the SGD descent (``descend_``) applied in place to the chunk's rows of the parameter bank: the
update is elementwise, so it needs no vmap, and in place it allocates nothing (on CPU a round of
small models is bound by these memory passes). Clients that are inactive, or that have done
their own number of steps, keep their parameters and state (torch.where on a mask), so one vmap
call serves clients of different shard sizes. Chunks are sized from free memory.

For large models (``engine.strategy``, picked by dfl/engines/plan.py) the chunk's clients run one
after another instead: the same ``gradient`` without vmap on one client's rows, the same
``descend_`` over a chunk of one; same numbers (to float rounding), plain convolutions instead of
vmap's grouped ones, one client's activations in memory.
"""
from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_leaves, tree_map

from .. import optim
from ..algorithms import Correction
from ..errors import ConfigError
from . import malloc, plan
from .base import ENGINES, Engine, host_to_device


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


def capacity(device: torch.device) -> int:
    """Bytes a run may count on: free memory of a GPU; on CPU the RAM (MemTotal, capped by the
    cgroup's memory.max), not the momentary MemAvailable that other processes make go up and down."""
    if device.type == "cuda":
        return free_memory(device)
    total = 0
    try:
        with open("/proc/meminfo") as fh:
            total = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        total = min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        pass
    return total


def check_fits(per_client: int, chunk_size: int, room: int, device: torch.device, dim: int, batch: int) -> None:
    """Stop before allocating when the engine's estimate of one client (or of the configured chunk)
    is more than the device can hold (``capacity``); the message names the keys that shrink it."""
    gb = 2.0 ** 30
    has = f"{device} has {room / gb:.1f} GB" + (" free" if device.type == "cuda" else "")
    if per_client > room:
        raise ConfigError(f"engine: one client needs about {per_client / gb:.1f} GB (a model of {dim:,} parameters, "
                          f"local.batch_size = {batch}) but {has}; lower local.batch_size, choose a smaller "
                          "model.name, or set engine.device")
    if chunk_size and chunk_size * per_client > room:
        need = chunk_size * per_client / gb
        raise ConfigError(f"engine.chunk_size: {chunk_size} clients at once need about {need:.1f} GB but {has}; "
                          "lower engine.chunk_size (0 = sized from free memory) or local.batch_size")


@ENGINES.register("vectorized")
class VectorizedEngine(Engine):
    """Local training of all clients in chunks: vmap over a chunk's clients, or one client after
    another with the same functional step (``engine.strategy``; dfl/engines/plan.py)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.device.type == "cpu":
            malloc.tune()  # step tensors reused from the heap instead of fresh mmap'd pages
        opt = self.opt = optim.make(self.optimizer, **self.hparams)
        n = self.data.n
        # Every client starts from the model's initial weights (MESA's EMA starts there too).
        params = {k: p.detach() for k, p in self.model.named_parameters()}
        init_kw = dict(num_samples=int(self.data.sizes.max()), num_classes=self.data.num_classes)
        one = self.opt.init(params, **init_kw)
        self._plan(sum(t.numel() for t in tree_leaves(one)))
        # reset_state: a fresh state per round and chunk (opt.init at the round-start rows), none kept
        self.state = (None if self.local.reset_state
                      else tree_map(lambda t: t.unsqueeze(0).repeat(n, *([1] * t.dim())).clone(), one))
        self._init = vmap(lambda p: opt.init(p, **init_kw))
        self._progress: Optional[optim.Progress] = None
        model, cast = self.model, functools.partial(plan.autocast, self.local.precision, self.device)
        self._channels_last = plan.channels_last(self.strategy, self.device)

        def forward(q, x):  # bf16: autocast in the forward only, the loss on logits of the weights' dtype
            with cast():
                out = functional_call(model, q, (x,))
            return out.to(next(iter(q.values())).dtype)

        def client_gradient(p, s, x, y, index):
            obj = optim.Objective(forward=lambda q: forward(q, x), targets=y, index=index)
            return opt.gradient(p, s, obj, self._progress)

        # a step = gradient (vmapped over the chunk, or of one client), then the SGD descent in
        # place on the bank's rows (elementwise, no vmap), then after_descent where the optimizer
        # declares one (MESA)
        self._one_gradient = client_gradient
        self._gradient = vmap(client_gradient)
        self._after_one = opt.after_descent if opt.has_after_descent else None
        self._after = vmap(opt.after_descent) if opt.has_after_descent else None
        self._begin = vmap(opt.begin_round)

    def _plan(self, state_numel: int) -> None:
        """Strategy, memory estimate and chunk size, before anything of the clients is allocated;
        ConfigError when one client, the configured chunk or the whole run cannot fit."""
        n, dim, batch = self.data.n, self.layout.size, self.data.batch_size
        act = activation_numel(self.model, self.data.x[:1])
        self.strategy, self._why = plan.pick_strategy(self.local.strategy, self.device, dim, batch, act)
        per_client = 4 * (12 * dim + 4 * batch * act)
        self._room = capacity(self.device)
        check_fits(per_client, self.chunk_size if self.strategy == "vmap" else 0, self._room, self.device, dim, batch)
        self.memory = plan.plan_memory(
            n=n, dim=dim, state_numel=state_numel, activations=act, batch=batch, strategy=self.strategy,
            reset_state=self.local.reset_state, free=free_memory(self.device), chunk_size=self.chunk_size)
        plan.check_total(self.memory, self._room, self.device, n, dim)
        self.chunk_size = self.memory.chunk

    def describe(self) -> dict[str, Any]:
        m = self.memory
        mb = lambda b: round(b / 2 ** 20, 1)  # noqa: E731
        return {"strategy": self.strategy, "strategy_reason": self._why, "precision": self.local.precision,
                "chunk_size": self.chunk_size, "memory_estimate_mb": mb(m.total), "memory_fixed_mb": mb(m.fixed),
                "memory_chunk_mb": mb(m.chunk_bytes), "memory_capacity_mb": mb(self._room)}

    def summary_line(self) -> str:
        what = f"{type(self.model).__name__} ({self.layout.size:,} parameters, batch {self.data.batch_size})"
        return (f"engine: {self.strategy} ({self._why}), precision {self.local.precision}; "
                + self.memory.line(what, self.device, self._room))

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
        corr = None
        if correction is not None:
            d = correction.direction.to(dev)
            d = d.expand(len(clients), -1) if d.dim() == 1 else d[sl]
            corr = self.layout.unflatten(d)
        chunk = _Chunk(clients, active[clients], steps[clients], local, glob, round_, lr, corr,
                       correction.grad_scale if correction is not None else 1.0)
        steps_of = self._sequential_steps if self.strategy == "sequential" else self._vmap_steps
        state, loss_sum = steps_of(params, state, chunk, kmax)
        if self.state is not None:
            tree_map(lambda full, part: full[sl].copy_(part), self.state, state)
        out = (loss_sum / host_to_device(chunk.todo, dev).clamp(min=1)).cpu().numpy()
        out[~chunk.active] = np.nan
        return out

    def _vmap_steps(self, params, state, c: "_Chunk", kmax: int):
        """All clients of the chunk at once: vmap(gradient), the descent in place on the rows;
        clients that are inactive or done keep their weights and state (a mask)."""
        dev = self.device
        act, todo = host_to_device(c.active, dev), host_to_device(c.todo, dev)
        loss_sum = torch.zeros(len(c.clients), dtype=torch.float64, device=dev)
        for k in range(kmax):
            g = c.glob[:, k]
            x = self.data.inputs(g, c.clients, c.round, k)
            grads, new_s, loss = self._gradient(params, state, x, self.data.y[g], c.local[:, k])
            self._direction(grads, c.corr, c.grad_scale)
            if (c.active & (k < c.todo)).all():  # the common case: no client to hold back
                mask = None
                state = new_s
                loss_sum += loss.double()
            else:
                mask = act & (k < todo)
                state = _where(mask, new_s, state)
                loss_sum += torch.where(mask, loss.double(), torch.zeros_like(loss_sum))
            state = self.opt.descend_(params, grads, state, c.lr, mask)
            if self._after is not None:
                new_s = self._after(params, state)
                state = new_s if mask is None else _where(mask, new_s, state)
        return state, loss_sum

    def _sequential_steps(self, params, state, c: "_Chunk", kmax: int):
        """One client after another: its own number of steps of the functional gradient (no vmap)
        on its rows of the bank, and the same in-place descent over a chunk of one (its rows)."""
        loss_sum = torch.zeros(len(c.clients), dtype=torch.float64, device=self.device)
        one = lambda t: t.unsqueeze(0)  # noqa: E731  (a client's tensors as a chunk of one)
        for j in np.flatnonzero(c.active & (c.todo > 0)):
            rows = slice(int(j), int(j) + 1)
            p1 = {name: v[rows] for name, v in params.items()}  # (1, *shape) views of the bank's rows
            p = {name: v[0] for name, v in p1.items()}
            s1 = tree_map(lambda t: t[rows], state)
            for k in range(int(c.todo[j])):
                g = c.glob[rows, k]
                x = self.data.inputs(g, c.clients[rows], c.round, k)[0]
                if self._channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                grads, new_s, loss = self._one_gradient(p, tree_map(lambda t: t[0], s1), x, self.data.y[g[0]],
                                                        c.local[j, k])
                grads = {name: one(t) for name, t in grads.items()}
                self._direction(grads, None if c.corr is None else {n: v[rows] for n, v in c.corr.items()},
                                c.grad_scale)
                s1 = self.opt.descend_(p1, grads, tree_map(one, new_s), c.lr)
                if self._after_one is not None:
                    s1 = tree_map(one, self._after_one(p, tree_map(lambda t: t[0], s1)))
                loss_sum[j] += loss.double()
            tree_map(lambda full, part: full[rows].copy_(part), state, s1)
        return state, loss_sum

    def _direction(self, grads, corr, grad_scale: float) -> None:
        """In place on the (c, *shape) gradients: d <- grad_scale * d + direction (MoFedSAM),
        then the clip to local.clip_grad_norm."""
        if corr is not None:
            for name, g in grads.items():
                g.mul_(grad_scale).add_(corr[name])
        if self.local.clip_grad_norm:
            clip_rows_(grads, self.local.clip_grad_norm)

    def reset_clients(self, idx):
        """Zero the non-finite entries of the clients' state rows (the finite ones are kept)."""
        if self.state is None:
            return
        for leaf in torch.utils._pytree.tree_leaves(self.state):
            if isinstance(leaf, torch.Tensor) and leaf.dim() > 0 and leaf.is_floating_point():
                rows = leaf[idx]
                leaf[idx] = torch.where(torch.isfinite(rows), rows, torch.zeros_like(rows))

    def state_dict(self):
        """The kept optimizer state; empty with reset_state (each round starts from opt.init)."""
        return {} if self.state is None else {"opt_state": self.state}

    def load_state_dict(self, state):
        if self.state is not None and "opt_state" in state:
            tree_map(lambda full, saved: full.copy_(saved), self.state, state["opt_state"])


class _Chunk(NamedTuple):
    """A chunk's clients (rows of ClientData) and what their round needs: active mask and step
    counts (numpy), batch indices (local, global: (c, K, B)), round, lr, MoFedSAM's direction."""

    clients: np.ndarray
    active: np.ndarray
    todo: np.ndarray
    local: torch.Tensor
    glob: torch.Tensor
    round: int
    lr: float
    corr: Optional[dict[str, torch.Tensor]]
    grad_scale: float
