"""Learning-rate schedules over communication rounds: ``schedule(name, lr, ...)(round) -> lr``.

- constant:     lr_r = lr
- exponential:  lr_r = lr * decay^r              (FL papers: decay = 0.998 per round)
- cosine:       lr_r = min_lr + (lr - min_lr) * (1 + cos(pi * min(r, T) / T)) / 2,  T = total_rounds
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from ..registry import Registry
from .core import check, check_lr, check_number

Schedule = Callable[[int], float]

SCHEDULES: Registry = Registry("schedule")
"""Name -> builder ``(lr, decay, total_rounds, min_lr) -> Schedule``."""


@SCHEDULES.register("constant")
def constant(lr: float, decay: float, total_rounds: Optional[int], min_lr: float) -> Schedule:
    return lambda r: lr


@SCHEDULES.register("exponential")
def exponential(lr: float, decay: float, total_rounds: Optional[int], min_lr: float) -> Schedule:
    return lambda r: lr * decay ** r


@SCHEDULES.register("cosine")
def cosine(lr: float, decay: float, total_rounds: Optional[int], min_lr: float) -> Schedule:
    ok = isinstance(total_rounds, int) and not isinstance(total_rounds, bool) and total_rounds >= 1
    check("total_rounds", ok, "an int >= 1 for the cosine schedule", total_rounds)
    check("min_lr", min_lr <= lr, f"<= lr ({lr})", min_lr)
    t = float(total_rounds)
    return lambda r: min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(r, t) / t))


def schedule(name: str, lr: float, *, decay: float = 0.998, total_rounds: Optional[int] = None,
             min_lr: float = 0.0) -> Schedule:
    """The learning rate of round r (0-based) under the schedule ``name``.

    Args:
        name: "constant", "exponential" or "cosine".
        lr: initial learning rate > 0.
        decay: per-round factor of "exponential", in (0, 1] (default 0.998).
        total_rounds: length of the "cosine" schedule (required there).
        min_lr: final learning rate of "cosine", in [0, lr] (default 0).

    >>> f = schedule("exponential", 0.1, decay=0.5); f(0), f(2)
    (0.1, 0.025)
    """
    build = SCHEDULES[name]
    check_lr(lr)
    check("decay", 0 < check_number("decay", decay) <= 1, "in (0, 1]", decay)
    check("min_lr", check_number("min_lr", min_lr) >= 0, ">= 0", min_lr)
    return build(float(lr), float(decay), total_rounds, float(min_lr))


