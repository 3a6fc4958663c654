"""What a round does around local training, for every algorithm.

The engine runs: ``bank = algo.start(bank, ctx)``; K local steps of every active client (with
``algo.correction()`` added to each step if set); ``bank, extra = algo.aggregate(before, bank, ctx)``.
An algorithm never builds W (that is topologies/'s job) and never loops over clients. What it
does to whole banks goes through ``ctx`` (``ctx.mix``, ``ctx.combine``): the engine's operations,
which work wherever the engine keeps the rows (this process, Ray actors). What gossip mixes is
declared as data (``Algorithm.mixes``), so that other runtimes (the Flower relay) read it too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from .. import choco
from ..config import Config
from ..errors import ConfigError
from ..gossip import BankOps
from ..metrics import consensus_distance, gossip_mb, server_mb
from ..optim import OPTIMIZERS
from .registry import ALGORITHMS


def family_of(optimizer: str) -> str:
    """The family of a registered optimizer, named after its default member: "sam" for the
    sharpness-aware ones (their class says ``sam_family``), else "sgd"."""
    return "sam" if OPTIMIZERS[optimizer].sam_family else "sgd"


@dataclass
class RoundContext:
    """Everything about the current round that an algorithm may read."""

    round: int
    active: torch.Tensor          # (n,) bool
    W: Any                        # torch operator for this round (None for centralized)
    degrees: np.ndarray           # (n,) graph degrees this round
    gossip_steps: int
    lr: float
    local_steps: int
    #: The engine's bank operations; in-process tensors where nothing mixes banks.
    ops: BankOps = field(default_factory=BankOps)

    def mix(self, X: Any) -> Any:
        """W^Q X for this round's W and Q, wherever the bank lives."""
        return self.ops.mix(X, self.W, self.gossip_steps)

    def combine(self, terms: list[tuple[float, Any]]) -> Any:
        """sum_k c_k X_k of banks, wherever they live (added left to right)."""
        return self.ops.combine(terms)


@dataclass(frozen=True)
class Correction:
    """A per-step change of the local descent direction, before clipping, weight decay and
    momentum: d <- grad_scale * d + direction, then the optimizer's step along d.

    MoFedSAM's client momentum (FL-Simulator client/mofedsam.py: the perturbed loss scaled by
    alpha, plus (1 - alpha) <w, Delta> whose gradient is (1 - alpha) Delta, then the clip and the
    SGD step with weight decay at w)."""

    grad_scale: float
    direction: torch.Tensor       # (d,) or (n, d)


class Algorithm:
    """Base class; subclasses are registered in dfl.algorithms.ALGORITHMS."""

    name: ClassVar[str] = ""
    #: How the algorithm appears in labels and legends ("DFedSAM-MGS").
    label: ClassVar[str] = ""
    #: A server averages (no graph, no gossip): CFL baselines.
    centralized: ClassVar[bool] = False
    #: The local optimizers this algorithm's name promises (family_of): "sgd" or "sam"; the
    #: family's namesake is the default.
    family: ClassVar[str] = "sgd"
    #: Any other optimizer is accepted too (pooled training).
    any_optimizer: ClassVar[bool] = False
    #: aggregate() reads the start-of-round bank; when False the engine passes None and skips a copy.
    needs_before: ClassVar[bool] = True
    #: What the round's gossip mixes: "after" (the trained models), "before" (the start-of-round
    #: models, then each client's local update is added: D-PSGD), or None (no gossip: the driver's
    #: aggregate reads the rows itself, as server averaging does).
    mixes: ClassVar[Optional[str]] = None

    @classmethod
    def optimizers(cls) -> tuple[str, ...]:
        """The registered optimizers of this algorithm's family, its default first."""
        return (cls.family, *(n for n in OPTIMIZERS.names() if n != cls.family and family_of(n) == cls.family))

    @classmethod
    def default_optimizer(cls) -> str:
        return cls.family

    @classmethod
    def label_with(cls, optimizer: str) -> str:
        """The label of this algorithm training with `optimizer`: another member of its family
        renames it ("DFedSAM" + asam = "DFedASAM", the family default's label replaced by the
        optimizer's); an algorithm that takes any optimizer names it ("Pooled (sgd)")."""
        if optimizer in OPTIMIZERS and optimizer != cls.family and family_of(optimizer) == cls.family:
            return cls.label.replace(OPTIMIZERS[cls.family].label, OPTIMIZERS[optimizer].label, 1)
        return f"{cls.label} ({optimizer})" if optimizer and cls.any_optimizer else cls.label

    def __init__(self, cfg: Config, num_clients: int, dim: int):
        self.cfg = cfg
        self.n = num_clients
        self.dim = dim
        if not self.any_optimizer and cfg.local.optimizer not in self.optimizers():
            raise ConfigError(
                f"local.optimizer: algorithm {self.name!r} trains with {' or '.join(self.optimizers())}, "
                f"got {cfg.local.optimizer!r}{self._hint(cfg.local.optimizer)}")
        if self.centralized and cfg.algorithm.compression != "none":
            raise ConfigError(f"algorithm.compression: compresses gossip messages; {self.name!r} is centralized "
                              f"(use a decentralized algorithm or compression = 'none'), got {cfg.algorithm.compression!r}")

    def _hint(self, optimizer: str) -> str:
        """' (use algorithm.name = 'dfedsam' or 'dfedsam_mgs' for SAM-family optimizers)': the
        registered algorithms of the same kind (centralized or not) that train with `optimizer`."""
        family = family_of(optimizer)
        names = [n for n, cls in ((n, ALGORITHMS[n]) for n in ALGORITHMS.names())
                 if cls.family == family and cls.centralized == self.centralized and not cls.any_optimizer]
        if not names:
            return ""
        listed = " or ".join(filter(None, [", ".join(map(repr, names[:-1])), repr(names[-1])]))
        return f" (use algorithm.name = {listed} for {OPTIMIZERS[family].label}-family optimizers)"

    # --- hooks -----------------------------------------------------------------------------
    def optimizer_overrides(self) -> dict[str, Any]:
        """Hyperparameters of the local optimizer that this algorithm fixes."""
        return {}

    def local_steps(self, configured: int) -> int:
        return configured

    def init(self, bank: torch.Tensor) -> None:
        """Called once with the initial bank (all rows equal)."""

    def start(self, bank: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return bank

    def correction(self, ctx: RoundContext) -> Optional[Correction]:
        return None

    def aggregate(self, before: torch.Tensor, after: torch.Tensor,
                  ctx: RoundContext) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def comm_mb(self, ctx: RoundContext, model_bytes: int) -> float:
        raise NotImplementedError

    def message_bytes(self, model_bytes: int) -> int:
        """Bytes of one client's message in one exchange: the float32 model unless compressed."""
        return model_bytes

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Gossip(Algorithm):
    """Decentralized averaging: X <- W^Q X after local training (DFedAvg / DFedSAM family).

    Inactive clients keep their model but still relay: W is applied to every row. With
    algorithm.compression each of the Q steps sends compressed messages instead (dfl.choco:
    Choco-Gossip, whose public copies x_hat are part of the algorithm's state), run by the
    engine's ``compressed_mix`` wherever it keeps the rows.
    """

    needs_before = False
    mixes = "after"

    def __init__(self, cfg: Config, num_clients: int, dim: int):
        super().__init__(cfg, num_clients, dim)
        self.exchange = choco.from_config(cfg)   # None: plain W^Q X

    def init(self, bank):
        if self.exchange is not None:
            self.exchange.init(bank)

    def mix(self, X: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        """W^Q X, or Q compressed gossip steps (algorithm.compression)."""
        if self.exchange is None:
            return ctx.mix(X)
        return self.exchange(X, ctx.W, ctx.gossip_steps, ctx.round, ops=ctx.ops)

    def message_bytes(self, model_bytes: int) -> int:
        """Bytes of one client's message in one gossip step."""
        return self.exchange.row_bytes(self.dim) if self.exchange is not None else model_bytes

    def exchange_metrics(self) -> dict[str, float]:
        """compression_ratio: bytes sent / bytes of the float32 models (1 without compression)."""
        return {"compression_ratio": self.exchange.spec.compress.ratio_achieved(self.dim) if self.exchange else 1.0}

    def aggregate(self, before, after, ctx):
        """W^Q x^after; or, mixing the start-of-round models, W^Q x^before + (x^after - x^before)."""
        if self.mixes == "before":  # the local update, added after mixing (one combination, no copies)
            mixed = ctx.combine([(1.0, after), (-1.0, before), (1.0, self.mix(before, ctx))])
        else:
            mixed = self.mix(after, ctx)
        return mixed, self.exchange_metrics()

    def comm_mb(self, ctx, model_bytes):
        return gossip_mb(ctx.degrees, None, ctx.gossip_steps, self.message_bytes(model_bytes))

    def state_dict(self):
        return {"exchange": self.exchange.state_dict()} if self.exchange is not None else {}

    def load_state_dict(self, state):
        if self.exchange is not None and "exchange" in state:
            self.exchange.load_state_dict(state["exchange"])


class ServerAveraging(Algorithm):
    """Centralized FL: the server averages the active clients' models (FedAvg family).

    x <- x + server_lr * mean_{i active}(x_i - x); every client starts the next round from x.
    Reports the client drift before aggregation: (1/m) sum_{i active} ||x_i - mean_active||^2.
    """

    centralized = True

    def init(self, bank):
        self.global_row = bank[0].clone()

    def start(self, bank, ctx):
        return self.global_row.expand_as(bank).clone()

    def aggregate(self, before, after, ctx):
        active = after[ctx.active]
        drift = consensus_distance(active)
        mean_update = active.mean(0) - self.global_row
        new = self.global_row + self.cfg.algorithm.server_lr * mean_update
        self.on_update(mean_update, ctx)
        self.global_row = new
        return new.expand_as(after).clone(), {"drift": drift}

    def on_update(self, mean_update: torch.Tensor, ctx: RoundContext) -> None:
        """Hook for algorithms that keep the round's mean client update, mean_i(x_i) - x, before
        the server learning rate (MoFedSAM)."""

    def comm_mb(self, ctx, model_bytes):
        return server_mb(int(ctx.active.sum()), model_bytes)

    def state_dict(self):
        return {"global_row": self.global_row}

    def load_state_dict(self, state):
        self.global_row = state["global_row"]
