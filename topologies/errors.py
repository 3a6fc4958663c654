"""User-facing errors of the topologies package, and the closest-name hint shared with dfl."""
from __future__ import annotations

import difflib
from typing import Iterable


class TopologyError(ValueError):
    """A bad graph, mixing rule or parameter supplied by the user (one line, no traceback)."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """Message for an unknown registry name: lists the valid names and the closest match.

    >>> unknown_name("topology", "rng", ["ring", "star"])
    "unknown topology 'rng'; valid: ring, star (did you mean 'ring'?)"
    """
    valid = sorted(valid)
    msg = f"unknown {kind} {name!r}; valid: {', '.join(valid)}"
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg
