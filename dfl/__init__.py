"""dfl: a decentralized federated learning simulator (DFedSAM and the SAM family over gossip graphs).

From Python (each name is imported on first use; pandas only by the analysis functions)::

    import dfl
    history = dfl.run("experiments/quickstart.toml", out="runs/qs")   # as `dfl run`; the history
    df = dfl.load_runs("runs/qs")                                    # runs x rounds as a DataFrame
    dfl.summarize(df)                                                # mean +- std over seeds
"""
from typing import Any

__version__ = "0.1.0"

_LAZY = {"run": "dfl.api", "load_runs": "dfl.analysis", "summarize": "dfl.analysis"}
__all__ = ["run", "load_runs", "summarize", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dfl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
