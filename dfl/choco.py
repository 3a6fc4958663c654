"""Compressed gossip: Choco-Gossip with public copies x_hat, and the naive compressed average.

Choco-Gossip (Koloskova, Stich, Jaggi, "Decentralized Stochastic Optimization and Gossip
Algorithms with Compressed Communication", ICML 2019, arXiv 1902.00340, Algorithm 1). Every
client i keeps a public copy x_hat_i of its model that all its neighbours hold too (they apply
the same updates), and one gossip step is

    q_i     = C(x_i - x_hat_i)                          the message i sends
    x_hat_i <- x_hat_i + q_i                            at i and at every neighbour of i
    x_i     <- x_i + gamma sum_j W_ij (x_hat_j - x_hat_i)

i.e. X_hat <- X_hat + C(X - X_hat); X <- X + gamma (W X_hat - X_hat). The mean of X is kept
exactly (W doubly stochastic) and the error X - X_hat is fed back into the next message, so the
clients reach consensus for any contractive C (topk, randomk, scaled qsgd, sign) when gamma is
small enough. With C = identity and gamma = 1 one step is X <- W X. After local training this
is Choco-SGD (same paper, Algorithm 2), local steps in place of one gradient step.

The naive baseline ("Q1-gossip", Eq. (4) of the paper) mixes compressed models without memory,
    X <- X + gamma (W C(X) - C(X)),
which keeps the mean but stalls: whatever C drops is never averaged.

x_hat starts at the common initial model (every client knows it: same seed; the paper's 0 would
make the first messages compress whole models) and is independent of the graph, so a
time-varying W_t needs nothing more. In one process x_hat is stored once per client (n, d): all
neighbours of i hold the same copy. Ray's actors (dfl.engines.ray_exchange) and Flower's nodes
(dfl.flower.choco_node) hold their copies apart and run the same step, `consensus`, on their rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .compression import Compressor, Key
from .config import Config
from .gossip import BankOps, Operator, mix


def consensus(X: torch.Tensor, mixed: torch.Tensor, own: torch.Tensor, gamma: float) -> torch.Tensor:
    """X + gamma (mixed - own): the step of both modes, for the whole bank or one Flower node.

    mixed = W X_hat, own = X_hat (choco) or W C(X), C(X) (naive); for one node i, mixed is
    sum_j W_ij x_hat_j over its row (W_ii included) and own its x_hat_i. `mixed` is overwritten.
    """
    return mixed.sub_(own).mul_(gamma).add_(X)


def choco_step(X: torch.Tensor, X_hat: torch.Tensor, W: Operator, gamma: float,
               compress: Compressor, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
    """One Choco-Gossip step on (n, d) rows; returns (X, X_hat)."""
    X_hat = X_hat + compress(X - X_hat, key)
    return consensus(X, mix(X_hat, W), X_hat, gamma), X_hat


def naive_step(X: torch.Tensor, W: Operator, gamma: float, compress: Compressor, key: Key) -> torch.Tensor:
    """One step of the plain compressed average X <- X + gamma (W C(X) - C(X)) (no memory)."""
    Q = compress(X, key)
    return consensus(X, mix(Q, W), Q, gamma)


def compressor(cfg: Config) -> Compressor:
    """The message format of algorithm.compression / compression_ratio / levels."""
    a = cfg.algorithm
    return Compressor(a.compression, a.compression_ratio, a.levels)


@dataclass(frozen=True)
class Spec:
    """What a compressed exchange does, whichever engine runs it (dfl.gossip.BankOps.compressed_mix).

    Args:
        compress: the message format.
        gamma: consensus step size (algorithm.consensus_step).
        mode: "choco" (with the public copies x_hat) or "naive".
        seed: the run's seed (random streams of randomk / qsgd).
    """

    compress: Compressor
    gamma: float
    mode: str = "choco"
    seed: int = 0

    def key(self, round_: int, step: int, clients: np.ndarray) -> Key:
        """The random streams of the messages of the clients `clients` (global ids) at a step."""
        return Key(self.seed, round_, step, clients)

    def __call__(self, X: torch.Tensor, x_hat: Optional[torch.Tensor], W: Operator, steps: int,
                 round_: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(X, x_hat) after `steps` steps over the whole bank in this process (x_hat None: naive)."""
        clients = np.arange(X.shape[0])
        x_hat = x_hat.to(X.device) if x_hat is not None else None
        for q in range(steps):
            key = self.key(round_, q, clients)
            if self.mode == "choco":
                X, x_hat = choco_step(X, x_hat, W, self.gamma, self.compress, key)
            else:
                X = naive_step(X, W, self.gamma, self.compress, key)
        return X, x_hat


class CompressedGossip:
    """Q compressed gossip steps per round, the public copies x_hat they keep, and their bytes.

    x_hat is a bank of the engine that ran the last exchange (a tensor in this process, a handle
    to actor-held rows on Ray): the exchange itself is that engine's operation
    (``BankOps.compressed_mix``), and a checkpoint gathers x_hat to the (n, d) tensor that any
    engine continues from.

    Args:
        compress, gamma, mode, seed: the exchange (``Spec``).
    """

    def __init__(self, compress: Compressor, gamma: float, mode: str = "choco", seed: int = 0):
        self.spec = Spec(compress, gamma, mode, seed)
        self.x_hat: Any = None
        self.ops = BankOps()   # the engine that holds x_hat

    def init(self, bank: torch.Tensor) -> None:
        """x_hat <- the initial bank (every client's start, public)."""
        if self.spec.mode == "choco":
            self.x_hat = bank.detach().clone()

    def __call__(self, X: Any, W: Operator, steps: int, round_: int, ops: Optional[BankOps] = None) -> Any:
        """X after `steps` compressed gossip steps with W (the round's mixing matrix), run by the
        engine's bank operations `ops` (default: in this process)."""
        assert self.spec.mode == "naive" or self.x_hat is not None, "CompressedGossip.init first"
        self.ops = ops or BankOps()
        X, self.x_hat = self.ops.compressed_mix(X, self.x_hat, W, steps, round_, self.spec)
        return X

    def row_bytes(self, d: int) -> int:
        """Bytes of one client's message of one gossip step."""
        return self.spec.compress.row_bytes(d)

    def state_dict(self) -> dict[str, Any]:
        return {"x_hat": self.ops.gather(self.x_hat) if self.x_hat is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """x_hat from a checkpoint: an (n, d) tensor, which the next exchange places on its engine."""
        if state.get("x_hat") is not None:
            self.x_hat, self.ops = state["x_hat"], BankOps()


def from_config(cfg: Config) -> Optional[CompressedGossip]:
    """The run's compressed gossip, or None for algorithm.compression = "none" (plain W^Q X)."""
    a = cfg.algorithm
    if a.compression == "none":
        return None
    return CompressedGossip(compressor(cfg), a.consensus_step, a.compressed_gossip, cfg.seed)
