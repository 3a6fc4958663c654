"""The driver's side of the Ray actors' slots: bank handles (``RayBank``) and which slots live.

Every actor keeps its rows of each bank in named *slots* (dfl.engines.ray_actor); the driver only
holds handles, linear combinations of slot names, and counts how many handles name each slot so
that the actors can drop the others (``RayEngine._checkpoint`` tells them which ones live).
"""
from __future__ import annotations

import itertools
import weakref
from collections import Counter

import numpy as np
import torch

Terms = tuple[tuple[str, float], ...]


class Slots:
    """The slot names of a run: live counts, rows waiting for the actors to start, halo ids.

    Attributes:
        live: slot name -> number of handles that name it.
        pending: rows of slots made before the actors started (they are loaded at the start).
        halos: x_hat slot -> per actor, the global ids of the rows it holds copies of
            (dfl.engines.ray_exchange).
    """

    def __init__(self) -> None:
        self.live: Counter[str] = Counter()
        self.pending: dict[str, torch.Tensor] = {}
        self.halos: dict[str, list[np.ndarray]] = {}
        self._names = itertools.count()

    def new(self) -> str:
        """A fresh slot name."""
        return f"s{next(self._names)}"

    def handle(self, name: str) -> "RayBank":
        """The handle of one slot, as it is."""
        return RayBank(self, ((name, 1.0),))

    def acquire(self, names: list[str]) -> None:
        self.live.update(names)

    def release(self, names: list[str]) -> None:
        """Handles naming these slots are gone: forget the slots no handle names any more."""
        self.live.subtract(names)
        for name in names:
            if self.live[name] <= 0:
                del self.live[name]
                self.pending.pop(name, None)
                self.halos.pop(name, None)


class RayBank:
    """Handle of a bank held by the actors: sum_k c_k S_k over slot names, evaluated lazily in
    the actors (``RayEngine.combine`` builds new ones). Slots stay alive while a handle names them."""

    def __init__(self, slots: Slots, terms: Terms):
        self.terms = terms
        names = [name for name, _ in terms]
        slots.acquire(names)
        weakref.finalize(self, slots.release, names)
