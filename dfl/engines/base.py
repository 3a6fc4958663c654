"""What every engine shares: the clients' data on the device and the round's batches.

An engine runs the local steps of all active clients of one round:

    bank, losses = engine.train(bank, active, steps, lr, round_, correction)

bank is the (n, d) parameter bank (updated and returned), active a (n,) bool numpy mask, steps
the (n,) number of local steps of each client this round, losses the (n,) mean training loss of
each client (nan when it did not train). Per-client optimizer state stays inside the engine
(``state_dict`` / ``load_state_dict`` for checkpoints). Whatever else a run does to banks (mix,
combine, copy, take rows, evaluate, gather for a checkpoint) is an operation of the engine too,
with in-process defaults here, so that an engine may keep the rows elsewhere (``Engine``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .. import optim, rng
from ..algorithms import Correction
from ..bank import Layout
from ..config import EngineConfig
from ..data import FederatedData
from ..data.augment import CROP_FLIP_FIELDS, check_augment, crop_flip, crop_flip_draws
from ..faults import finite_rows
from ..gossip import BankOps
from ..metrics import consensus_distance, evaluate_clients
from ..registry import Registry
from .plan import set_tf32

ENGINES: Registry = Registry("engine backend")

#: Inputs gathered per chunk of the batched local evaluation (floats; 2^26 = 256 MB).
EVAL_FLOATS = 2 ** 26


@dataclass(frozen=True)
class LocalOptions:
    """How local training runs, beyond the optimizer's own hyperparameters (from ``[local]``, and
    ``engine.strategy`` / ``engine.precision``).

    Attributes:
        lr_max: the configured learning rate (``local.lr``), the schedule's peak; methods that
            follow the learning rate (GSAM's rho_t) read it through ``dfl.optim.Progress``.
            0: the round's own learning rate is the peak.
        reset_state: every round starts from a fresh optimizer state (``opt.init`` at the
            round-start weights), as the reference code builds a new optimizer per round.
        clip_grad_norm: the descent direction of every step is clipped to this global L2 norm
            (``torch.nn.utils.clip_grad_norm_`` after backward, as DisPFL); 0 = off.
        strategy: the vectorized engine's auto, vmap or sequential (dfl/engines/plan.py).
        precision: fp32, tf32 or bf16 (autocast in the forward; weights and descent in fp32).
    """

    lr_max: float = 0.0
    reset_state: bool = True
    clip_grad_norm: float = 0.0
    strategy: str = "auto"
    precision: str = "fp32"


def pad_indices(parts: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged index lists -> (n, max_len) int64 padded with 0, and the (n, max_len) bool mask."""
    width = max(1, max((len(p) for p in parts), default=1))
    idx = torch.zeros(len(parts), width, dtype=torch.int64)
    mask = torch.zeros(len(parts), width, dtype=torch.bool)
    for i, p in enumerate(parts):
        idx[i, :len(p)] = torch.as_tensor(p, dtype=torch.int64)
        mask[i, :len(p)] = True
    return idx.to(device), mask.to(device)


def host_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on `device`; to a GPU through pinned memory without blocking the
    host (the copy is ordered on the current stream before the kernels that read it)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class ClientData:
    """The training pool on the device and every client's shard, padded to one (n, m) table.

    ``client_ids`` are the global ids of the clients of ``fed.client_train`` (default 0..n-1): a
    subset of the federation (a Ray actor's clients) keeps the global ids, so its batches come
    from the same per-client random streams as in the full federation. ``augment`` (data.augment:
    none, crop_flip) transforms every training batch with draws from the same per-client streams.
    """

    def __init__(self, fed: FederatedData, device: torch.device, seed: int, batch_size: int,
                 client_ids: Optional[np.ndarray] = None, augment: str = "none"):
        check_augment(augment, tuple(fed.x_train.shape[1:]))
        self.augment = augment
        self.x = fed.x_train.to(device)
        self.y = fed.y_train.to(device)
        self.shards, _ = pad_indices(fed.client_train, device)
        self.sizes = np.array([len(p) for p in fed.client_train], dtype=np.int64)
        self.seed = seed
        self.batch_size = batch_size
        self.num_classes = fed.num_classes
        self.n = len(fed.client_train)
        self.ids = np.arange(self.n) if client_ids is None else np.asarray(client_ids, dtype=np.int64)
        assert self.ids.shape == (self.n,), "one global id per client"

    def batches(self, clients: np.ndarray, round_: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(local, global) indices (len(clients), steps, B) of the clients' batches this round.

        ``clients`` index this ClientData's rows; the random streams are those of their global ids.
        """
        local = rng.batch_indices(self.seed, round_, self.ids[clients], self.sizes[clients], steps,
                                  self.batch_size)
        local_t = host_to_device(local, self.shards.device)
        rows = torch.as_tensor(clients, device=self.shards.device).view(-1, 1, 1)
        return local_t, self.shards[rows, local_t]

    def inputs(self, glob: torch.Tensor, clients: np.ndarray, round_: int, step: int) -> torch.Tensor:
        """The training inputs of the samples ``glob`` ((len(clients), B) global indices) that the
        clients (rows of this ClientData) see at local step ``step`` of round ``round_``.

        With data.augment = crop_flip, sample b of client c is augmented with the uniforms of
        stream (seed, AUGMENT, round_, global id of c, step * B + b): the same batch whichever
        engine, chunk or actor computes it.
        """
        x = self.x[glob]
        if self.augment == "none":
            return x
        u = rng.augment_uniforms(self.seed, round_, self.ids[clients], step, glob.shape[-1], CROP_FLIP_FIELDS)
        return crop_flip(x, host_to_device(crop_flip_draws(u), x.device))


@dataclass(frozen=True)
class LocalEval:
    """Where each client's model is tested: a sample pool and every client's padded indices into it.

    Attributes:
        x, y: the pool (the training pool with held-out client splits, else the global test set);
        idx, mask: (n, m) indices into the pool and True on real entries (``pad_indices``).
    """

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    mask: torch.Tensor

    def parts(self) -> list[torch.Tensor]:
        """Each client's indices into the pool, unpadded, on the CPU."""
        return [self.idx[i][self.mask[i]].cpu() for i in range(len(self.idx))]


@dataclass(frozen=True)
class RunSettings:
    """What an engine is told about the run beyond local training.

    Attributes:
        engine_config: the ``[engine]`` table (a Ray engine's address and actor shape).
        evaluation: the clients' local test sets; None when there are none (pooled training).
        engine_rows: the clients' rows may stay with the engine between rounds (gossip, whose
            mixing the engine does); False when the driver's algorithm reads them (server averaging).
    """

    engine_config: EngineConfig = EngineConfig()
    evaluation: Optional[LocalEval] = None
    engine_rows: bool = True


class Engine(BankOps):
    """Interface of the engines (see the module docstring).

    Besides training, an engine owns the bank's operations (``BankOps``: mix, combine, copy,
    take, patched, gather) and ``place``, ``finite``, ``summary``; the defaults here work on
    tensors in this process, and an engine whose clients live elsewhere (Ray actors) overrides
    them on its own handles. Callers never ask which kind of bank they hold.
    """

    def __init__(self, model: torch.nn.Module, layout: Layout, data: ClientData, optimizer: str,
                 hparams: dict[str, Any], device: torch.device, chunk_size: int = 0,
                 local: LocalOptions = LocalOptions(), settings: RunSettings = RunSettings()):
        self.model, self.layout, self.data = model, layout, data
        self.optimizer, self.hparams, self.device = optimizer, hparams, device
        self.chunk_size = chunk_size
        self.local = local
        self.settings = settings
        set_tf32(local.precision, device)

    def place(self, bank: torch.Tensor) -> Any:
        """The engine's bank for these (n, d) rows: the tensor itself in this process."""
        return bank

    def finite(self, bank: Any) -> np.ndarray:
        """(n,) bool: rows without NaN / Inf."""
        return finite_rows(bank).cpu().numpy()

    def summary(self, bank: Any) -> tuple[torch.Tensor, np.ndarray, float]:
        """(mean row, each client's local test accuracy, consensus distance) of a bank.

        Local accuracies are nan without local test sets (``RunSettings.evaluation`` None)."""
        mean_row, consensus = bank.mean(0), consensus_distance(bank)
        ev = self.settings.evaluation
        if ev is None:
            return mean_row, np.full(len(bank), np.nan), consensus
        chunk = max(1, min(len(bank), self.chunk_size or 64,
                           EVAL_FLOATS // max(1, ev.idx.shape[1] * ev.x[0].numel())))
        local = evaluate_clients(self.model, self.layout, bank, ev.x, ev.y, ev.idx, ev.mask, chunk)
        return mean_row, local, consensus

    def progress(self, lr: float, round_: int) -> "optim.Progress":
        """The run's position handed to the optimizer's gradient this round."""
        return optim.Progress(lr=lr, lr_max=self.local.lr_max or lr, round=round_)

    def train(self, bank: torch.Tensor, active: np.ndarray, steps: np.ndarray, lr: float,
              round_: int, correction: Optional[Correction]) -> tuple[torch.Tensor, np.ndarray]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the engine chose for the run (strategy, precision, chunk, memory estimate), for
        manifest.json; {} when there is nothing to record."""
        return {}

    def summary_line(self) -> str:
        """The choices and the memory estimate in one line, printed before a run ("" = none)."""
        return ""

    def metrics(self) -> dict[str, Any]:
        """Engine numbers added to every round's metrics (e.g. Ray's actor_restarts)."""
        return {}

    def reset_clients(self, idx: np.ndarray) -> None:
        """Clear the local optimizer state (momentum, EMA, ...) of clients ``idx`` after they
        diverged (faults.on_nan = "skip_client"); nothing to clear when it starts over every round."""

    def close(self) -> None:
        """Release what the engine holds (actors, a local Ray); a no-op for in-process engines."""
