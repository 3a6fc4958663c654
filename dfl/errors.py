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


USER_ERRORS = (DflError, TopologyError)
