"""The Flower run's side of the run directory, in `dfl run`'s format (dfl.results.RunDir).

The ServerApp keeps a dfl Simulation for the wiring (model, layout, graphs, schedule, algorithm
hooks, the global test set) but never trains with it: the nodes do. ``Recorder`` turns what the
round brought back (train losses, client models, local accuracies) into a metrics row with the
keys of ../shared/DESIGN.md and appends it through RunDir, so `dfl plot` / `dfl report` read
Flower runs like any other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..config import Config
from ..errors import DflError
from ..metrics import consensus_distance, evaluate
from ..results import RunDir, prepare
from ..simulation import Simulation


class FlowerRunDir(RunDir):
    """RunDir without checkpoints: client optimizer state lives on the devices, so a Flower run
    is not resumable with `dfl run --resume`."""

    def checkpoint(self, sim: Any) -> None:
        pass


@dataclass
class Recorder:
    """Collects one round's numbers and writes the metrics row on evaluated rounds."""

    sim: Simulation
    writer: FlowerRunDir
    started: float = field(default_factory=time.perf_counter)
    round_extra: dict[str, Any] = field(default_factory=dict)

    def is_eval_round(self, round_: int) -> bool:
        """round_ counts completed rounds (1-based), as `dfl run`'s rows do."""
        return round_ % self.sim.cfg.eval_every == 0 or round_ == self.sim.cfg.rounds

    def local(self, accs: list[float]) -> None:
        arr = np.array(accs, dtype=np.float64)
        self.round_extra["local_test_acc"] = float(np.nanmean(arr)) if len(arr) else float("nan")
        self.round_extra["local_test_acc_std"] = float(np.nanstd(arr)) if len(arr) else float("nan")

    def write(self, round_: int, bank: torch.Tensor, extra: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the mean of `bank` (n, d) on the global test set and append the row."""
        sim = self.sim
        sim.round = round_
        sim.bank = bank
        acc, loss = evaluate(sim.model, sim.layout, bank.mean(0).to(sim.device), sim.x_test, sim.y_test)
        row = {"round": round_, "test_acc": acc, "test_loss": loss, **self.round_extra, **extra,
               "consensus": consensus_distance(bank), "wall_s": time.perf_counter() - self.started}
        sim.history.append(row)
        self.writer(sim, row)
        self.round_extra = {}
        return row


def open_run(cfg: Config, raw: dict[str, Any]) -> FlowerRunDir:
    """Prepare the run directory named by the run config's "out" (and "overwrite")."""
    out = Path(str(raw.get("out", "") or "runs/flower")).expanduser()
    overwrite = bool(raw.get("overwrite", False))
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise DflError(f"run config out: {out.resolve()} exists and is not empty; pass --run-config "
                       "'overwrite=true' to replace it, or another out=\"...\"")
    path = prepare(out, overwrite=overwrite)
    return FlowerRunDir(path, cfg, label=f"{cfg.label()} (Flower)" if not cfg.name else "")


def finish(sim: Simulation, writer: FlowerRunDir, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    import flwr

    return writer.finish(sim, {"runtime": "flower", "flwr": flwr.__version__, **(extra or {})})
