"""Where clients run: vectorized (default, torch.func over all clients), serial (reference loop).
The Ray backend lives in dfl/engines/ray_engine.py and is imported only when asked for."""
from . import serial, vectorized  # noqa: F401 (registers)
from .base import ENGINES, ClientData, LocalEval, LocalOptions, RunSettings, Engine, pad_indices


@ENGINES.register("ray")
def _ray_engine(*args, **kwargs) -> Engine:
    """engine.backend = "ray": imports ray only when a run asks for it."""
    from .ray_engine import RayEngine
    return RayEngine(*args, **kwargs)


__all__ = ["ENGINES", "ClientData", "LocalEval", "LocalOptions", "RunSettings", "Engine", "pad_indices"]
