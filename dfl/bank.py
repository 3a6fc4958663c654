"""The parameter bank: all client models as one (n_clients, n_params) tensor.

Gossip is one matmul on the bank; local training views each chunk of rows as a dict of
(chunk, *shape) tensors for torch.func.functional_call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of a model's parameters inside one flat row."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> "Layout":
        names, shapes, offsets, pos = [], [], [], 0
        for name, t in params.items():
            names.append(name)
            shapes.append(t.shape)
            offsets.append(pos)
            pos += t.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), pos)

    def unflatten(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """(m, size) -> {name: (m, *shape)} views (no copy)."""
        m = rows.shape[0]
        return {
            n: rows[:, o:o + s.numel()].reshape(m, *s)
            for n, s, o in zip(self.names, self.shapes, self.offsets)
        }

    def row(self, module: torch.nn.Module) -> torch.Tensor:
        """A module's parameters as one flat row (size,)."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def load_row(self, module: torch.nn.Module, row: torch.Tensor) -> None:
        """Copy a flat row into a module's parameters (in place)."""
        with torch.no_grad():
            for p, o, s in zip(module.parameters(), self.offsets, self.shapes):
                p.copy_(row[o:o + s.numel()].reshape(s))
