"""Stopping a run on SIGTERM / SIGINT with a checkpoint, instead of losing the round in progress.

    with StopOnSignal() as stop:
        sim.run(on_round, after_round=lambda s: stop.raise_if_requested(...))

The first SIGTERM or SIGINT (Ctrl-C) only records the request: the run finishes the round it is
in (a round is the unit a checkpoint can hold), writes a checkpoint and stops with
``Interrupted`` (exit code 143 or 130, one line saying how to resume). A second signal stops at
once, without waiting for the round: the last checkpoint on disk stays the one to resume from.
Outside the main thread (signal handlers cannot be installed there) nothing is installed.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Optional

from .errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopOnSignal:
    """SIGTERM / SIGINT handlers for the duration of a ``with`` block (the previous ones come back).

    Args:
        at_once: message of the ``Interrupted`` raised by a second signal, given its number.
    """

    def __init__(self, at_once: Optional[Callable[[int], str]] = None):
        self.signum: Optional[int] = None
        self.at_once = at_once or (lambda signum: f"stopped by {signal_name(signum)}")
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        raise Interrupted(self.at_once(signum), signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None
