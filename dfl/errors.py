"""User errors: the CLI prints their message on one line and exits with code 2."""
from __future__ import annotations

from topologies.errors import TopologyError


class DflError(Exception):
    """Base class of every error caused by user input (config, data, CLI)."""


class ConfigError(DflError, ValueError):
    """A bad config key, type or value."""


class DataError(DflError):
    """Missing or malformed data files, or data that cannot be partitioned as asked."""


class DivergedError(DflError):
    """Training produced NaN / Inf (the message names the client and the round)."""


class Interrupted(Exception):
    """A run stopped by SIGTERM / SIGINT (its checkpoint written); not an error of the input.

    The CLI prints the message (one line, how to resume) and exits with ``code``: 128 + the
    signal number, 143 for SIGTERM and 130 for SIGINT, as a shell reports a killed command.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum


USER_ERRORS = (DflError, TopologyError)


def check(key: str, ok: bool, allowed: str, value: object) -> None:
    """The one check of a user-supplied value: ConfigError ``"<key>: must be <allowed>, got
    <value>"`` unless ``ok`` (``local.lr: must be > 0, got -0.1``)."""
    if not ok:
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")


def require_in(key: str, value: object, choices: tuple, allowed: str = "") -> None:
    """``check`` that ``value`` is one of ``choices`` (``allowed``: how to list them, default
    ``one of a, b, c``)."""
    check(key, value in choices, allowed or f"one of {', '.join(map(str, choices))}", value)
