"""What the registered algorithms and optimizers say about themselves, for the code that only
names runs: Config.label(), the run-directory readers (plots, reports) and the Flower settings.

The answers come from the classes in dfl.algorithms.ALGORITHMS and dfl.optim.OPTIMIZERS (their
``label``, ``centralized``, ``family``, ``sam_family``), imported on the first question, so that
importing dfl.config or dfl.rundir stays free of torch (`dfl plot --help` starts fast). A name
that no registry knows (a run written by another version of dfl) is its own label.
"""
from __future__ import annotations

from typing import Any, Optional


def _algorithm(name: str) -> Optional[Any]:
    from .algorithms import ALGORITHMS

    return ALGORITHMS[name] if name in ALGORITHMS else None


def method_label(algorithm: str, optimizer: str = "") -> str:
    """'DFedSAM', 'DFedASAM' (dfedsam + asam), 'Pooled (sgd)': the algorithm's label with its
    local optimizer (Algorithm.label_with)."""
    cls = _algorithm(algorithm)
    return cls.label_with(optimizer) if cls is not None else algorithm


def is_centralized(algorithm: str) -> bool:
    """True for the server-averaging baselines (their runs have no graph)."""
    cls = _algorithm(algorithm)
    return cls is not None and cls.centralized


def is_variant(optimizer: str) -> bool:
    """True for an optimizer that is not its family's default (asam, tram: not sam, sgd): runs
    with it are a method of their own in legends and colours ("dfedsam+tram")."""
    from .algorithms.base import family_of
    from .optim import OPTIMIZERS

    return optimizer in OPTIMIZERS and family_of(optimizer) != optimizer
