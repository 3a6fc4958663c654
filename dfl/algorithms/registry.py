"""The algorithm registry (kept apart so algorithm files can import it without cycles)."""
from ..registry import Registry

ALGORITHMS: Registry = Registry("algorithm")
