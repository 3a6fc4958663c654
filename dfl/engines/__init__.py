"""Where clients run: vectorized (default, torch.func over all clients), serial (reference loop).
The Ray backend lives in dfl/engines/ray_backend.py and is imported only when asked for."""
from . import serial, vectorized  # noqa: F401 (registers)
from .base import ENGINES, ClientData, LocalEval, LocalOptions, RunSettings, Trainer, pad_indices


@ENGINES.register("ray")
def _ray_trainer(*args, **kwargs) -> Trainer:
    """engine.backend = "ray": imports ray only when a run asks for it."""
    from .ray_backend import RayTrainer
    return RayTrainer(*args, **kwargs)


__all__ = ["ENGINES", "ClientData", "LocalEval", "LocalOptions", "RunSettings", "Trainer", "pad_indices"]
