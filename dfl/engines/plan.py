"""What the vectorized engine decides once per run: how a chunk runs, in which precision, and
how much memory the run needs.

Strategy (``engine.strategy``):

- ``vmap``: ``torch.func.vmap`` of the optimizer's gradient over the chunk's clients. One call
  for all of them: the winner for small models, where a client's step is too small to keep the
  device busy. Under vmap a convolution becomes a grouped convolution over the clients, and
  max-pooling copies every activation (its batching rule moves the client dimension).
- ``sequential``: the same functional gradient (``torch.func.grad`` of the same
  ``opt.gradient``, no vmap) for one client after another, on that client's rows of the bank,
  then the same in-place descent (``descend_``) on those rows. Plain convolutions, one client's
  activations in memory at a time.
- ``auto``: sequential when one client's step is large: B x (activations of one sample) +
  parameters >= ``SEQUENTIAL_WORK[device type]``.

CPU threshold, measured (1 torch thread, 2-core VM; the gradients of a chunk, vmap against one
client after another; work in brackets): the digits MLP at B 13 (0.07M) vmap 5.3x faster, cnn on
8x8 digits at B 13 (0.15M) vmap 2.2x, cnn 8x8 B 32 (0.30M) vmap 3.2x; cnn 16x16 B 13 (0.54M)
even; cnn 32x32 B 4 (1.0M) sequential 2.1x, vgg11 8x8 B 13 (9.7M) 1.7x, vgg11 32x32 B 16 (17M)
1.5x, resnet18 32x32 B 16 (49M) 1.4x (vit and mixer at 32x32 B 32: sequential 1.2-1.4x).
docs/paper_scale.md has the table.
The CUDA threshold is a guess, not a measurement (no GPU was lent to this work): vmap's one
launch per layer for the whole chunk matters more there, so only models of CIFAR VGG-11 /
ResNet-18 size at B = 128 (62M / 300M) go sequential. ``dfl bench --paper`` measures both.

Precision (``engine.precision``): ``fp32`` (on CUDA also with TF32 off, which cuDNN's
convolutions otherwise use by default); ``tf32`` (CUDA matmuls and convolutions in TF32; no
effect on CPU); ``bf16`` (the forward under ``torch.autocast(dtype=bfloat16)``, logits cast back
to fp32 for the loss; the bank (master weights), the optimizer state, the descent and the gossip
stay fp32). Channels-last inputs for the sequential strategy on CUDA (the layout of its tensor
cores); not on CPU, where it measured slower for VGG-11 (0.61 -> 0.79 s) and mixed for ResNet-18.

Memory: ``plan_memory`` (bytes, fp32 estimates, conservative under bf16).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from ..errors import ConfigError

#: Fraction of free memory a chunk may use.
MEMORY_FRACTION = 0.25
#: Parameter banks a round holds at once: the bank, the gossip's output, the round-start copy.
BANK_COPIES = 3
#: auto: sequential from this B x activations + parameters per client step on (device type).
SEQUENTIAL_WORK = {"cpu": 2 ** 19, "cuda": 2 ** 25}

GB = 2.0 ** 30


def size(nbytes: float) -> str:
    """Bytes for people: '12.3 GB', or '4.5 MB' below 1 GB."""
    return f"{nbytes / GB:.1f} GB" if nbytes >= GB else f"{nbytes / 2 ** 20:.1f} MB"


def step_work(dim: int, batch: int, activations: int) -> int:
    """Numbers one client's step touches: B x activations of one sample + parameters."""
    return batch * activations + dim


def pick_strategy(requested: str, device: torch.device, dim: int, batch: int, activations: int) -> tuple[str, str]:
    """(strategy, why): ``requested`` unless it is auto, then the rule of the module docstring."""
    if requested != "auto":
        return requested, "engine.strategy"
    work = step_work(dim, batch, activations)
    limit = SEQUENTIAL_WORK.get(device.type, SEQUENTIAL_WORK["cuda"])
    pick = "sequential" if work >= limit else "vmap"
    sign = ">=" if pick == "sequential" else "<"
    return pick, f"auto: {work / 1e6:.2f}M numbers per client step {sign} {limit / 1e6:.2f}M on {device.type}"


def set_tf32(precision: str, device: torch.device) -> None:
    """CUDA's TF32 switches for the run (process-wide in torch): on for tf32 and bf16 (the ops
    autocast leaves in fp32), off for fp32. Nothing to do on CPU."""
    if device.type == "cuda":
        on = precision in ("tf32", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The context of a forward pass: bf16 autocast for precision bf16, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(strategy: str, device: torch.device) -> bool:
    """Whether the engine hands 4-d inputs to the model in channels-last layout."""
    return strategy == "sequential" and device.type == "cuda"


@dataclass(frozen=True)
class MemoryPlan:
    """The run's memory estimate in bytes: ``fixed`` (banks and kept optimizer state) and one
    chunk's step (``chunk_bytes`` for ``chunk`` clients)."""

    fixed: int
    chunk: int
    chunk_bytes: int
    one_client: int

    @property
    def total(self) -> int:
        return self.fixed + self.chunk_bytes

    def line(self, what: str, device: torch.device, room: int) -> str:
        """One line for the console: the estimate, what it is made of and what the device has."""
        free = " free" if device.type == "cuda" else ""
        return (f"memory: ~{size(self.total)} for a chunk of {self.chunk} clients of {what} "
                f"(banks and optimizer state {size(self.fixed)}, the chunk's step {size(self.chunk_bytes)}); "
                f"{device} has {size(room)}{free}")


def plan_memory(*, n: int, dim: int, state_numel: int, activations: int, batch: int, strategy: str,
                reset_state: bool, free: int, chunk_size: int = 0) -> MemoryPlan:
    """The memory estimate of a run, and the chunk size when ``chunk_size`` is 0 (from ``free``).

    One client's step (fp32): 12 weight-sized tensors (gradients, SAM's perturbed weights and
    second gradient, state, the descent's temporaries) and 4 x B x activations (the forward's
    outputs, their gradients, vmap's copies). vmap holds a whole chunk's steps at once;
    sequential holds one client's step and the chunk's optimizer state rows. Fixed: BANK_COPIES
    banks of n x dim, and n clients' optimizer state when it is kept across rounds.
    """
    one = 4 * (12 * dim + 4 * batch * activations)
    state = 4 * state_numel
    fixed = 4 * BANK_COPIES * n * dim + (0 if reset_state else n * state)
    if strategy == "sequential":
        chunk = chunk_size or int(max(1, min(n, (MEMORY_FRACTION * free - one) // max(state, 1))))
        return MemoryPlan(fixed, chunk, one + chunk * state, one)
    chunk = chunk_size or int(max(1, min(n, MEMORY_FRACTION * free // one)))
    return MemoryPlan(fixed, chunk, chunk * one, one)


def check_total(plan: MemoryPlan, room: int, device: torch.device, n: int, dim: int) -> None:
    """ConfigError (one line) when the whole run's estimate is more than the device holds."""
    if plan.total <= room:
        return
    free = " free" if device.type == "cuda" else ""
    raise ConfigError(
        f"engine: {n} clients of a model of {dim:,} parameters need about {plan.total / GB:.1f} GB (banks and "
        f"optimizer state {plan.fixed / GB:.1f} GB, a chunk of {plan.chunk} clients {plan.chunk_bytes / GB:.1f} GB) "
        f"but {device} has {room / GB:.1f} GB{free}; use fewer clients (data.num_clients), a smaller model.name "
        f"or local.batch_size, or spread the clients over GPUs (engine.backend = \"ray\")")
