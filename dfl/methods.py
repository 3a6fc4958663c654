"""What the registered algorithms and optimizers say about themselves, for the code that names
runs: Config.label(), the run directory's writer (manifest.json "method") and the Flower settings.

The answers come from the classes in dfl.algorithms.ALGORITHMS and dfl.optim.OPTIMIZERS (their
``label``, ``centralized``, ``family``, ``sam_family``, hyperparameters), imported on the first
question, so that importing dfl.config or dfl.rundir.read stays free of torch (`dfl plot --help`
starts fast). A run directory records the answers when it is written (``MethodFacts``), so that
`dfl plot` / `dfl report` ask the registries only about runs written without them. A name that
no registry knows (a run written by another version of dfl) is its own label.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from .errors import DflError


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


@dataclass(frozen=True)
class MethodFacts:
    """What a run's algorithm and optimizer are, as the readers of a run directory need it.

    label: the method's label in legends ("DFedSAM", "DFedASAM", "Pooled (sgd)"); optimizer: the
    local optimizer it trained with (the algorithm's default when the config left it empty);
    centralized: a server averages (the run has no graph); variant: the optimizer is not its
    family's default (its runs are a method of their own in colours); hyperparameters: the
    optimizer's hyperparameter names (dfl.optim.hyperparameters), so that labels leave out the
    keys it does not take (SAM's radius for SGD); None for an optimizer no registry knows.
    """

    label: str
    optimizer: str
    centralized: bool
    variant: bool
    hyperparameters: Optional[tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        """The dict manifest.json records under "method"."""
        names = self.hyperparameters
        return {**asdict(self), "hyperparameters": None if names is None else list(names)}

    @classmethod
    def from_json(cls, value: Any, source: str) -> "MethodFacts":
        """The facts recorded in ``source`` (manifest.json); a DflError names what is malformed."""
        kinds = {"label": str, "optimizer": str, "centralized": bool, "variant": bool,
                 "hyperparameters": (list, type(None))}
        if not isinstance(value, dict) or any(not isinstance(value.get(f.name), kinds[f.name]) for f in fields(cls)):
            raise DflError(f"{source}: \"method\" must be an object with {', '.join(kinds)} "
                           f"(as dfl run writes it), got {str(value)[:80]!r}")
        names = value["hyperparameters"]
        return cls(**{**{f.name: value[f.name] for f in fields(cls)},
                      "hyperparameters": None if names is None else tuple(map(str, names))})


def describe(algorithm: str, optimizer: str = "") -> MethodFacts:
    """The registries' answers about ``algorithm`` training with ``optimizer`` ("": the
    algorithm's default); a name no registry knows is its own label (hyperparameters: None)."""
    from .optim import OPTIMIZERS, hyperparameters

    cls = _algorithm(algorithm)
    label = method_label(algorithm, optimizer)  # as Config.label() names it
    optimizer = optimizer or (cls.default_optimizer() if cls is not None else "")
    known = optimizer in OPTIMIZERS
    return MethodFacts(label=label, optimizer=optimizer, centralized=is_centralized(algorithm),
                       variant=is_variant(optimizer),
                       hyperparameters=tuple(hyperparameters(optimizer)) if known else None)
