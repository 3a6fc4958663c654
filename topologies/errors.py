"""User-facing errors of the topologies package, and the closest-name hints shared with dfl."""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping


class TopologyError(ValueError):
    """A bad graph, mixing rule or parameter supplied by the user (one line, no traceback)."""


def did_you_mean(name: Any, valid: Iterable[str]) -> str:
    """' (did you mean 'ring'?)' when a valid name is close to `name`, else ''.

    >>> did_you_mean("rows_", ["rows", "cols"]), did_you_mean("x", ["rows"])
    (" (did you mean 'rows'?)", '')
    """
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """Message for an unknown registry name: lists the valid names and the closest match.

    >>> unknown_name("topology", "rng", ["ring", "star"])
    "unknown topology 'rng'; valid: ring, star (did you mean 'ring'?)"
    """
    valid = sorted(valid)
    return f"unknown {kind} {name!r}; valid: {', '.join(valid)}{did_you_mean(name, valid)}"


def check_params(owner: str, params: Mapping[str, Any], valid: list[str]) -> None:
    """Raise TopologyError for the first of `params` that `owner` (a graph family, a mixing
    rule) does not take, naming the ones it takes and the closest.

    >>> check_params("torus", {"row": 4}, ["rows", "cols"])
    Traceback (most recent call last):
    ...
    topologies.errors.TopologyError: torus takes params rows, cols; got row=4 (did you mean 'rows'?)
    """
    for key, value in params.items():
        if key not in valid:
            takes = f"takes params {', '.join(valid)}" if valid else "takes no params"
            raise TopologyError(f"{owner} {takes}; got {key}={value!r}{did_you_mean(key, valid)}")
