"""The Flower run's side of the run directory, in `dfl run`'s format (dfl.rundir.write.RunDir).

The ServerApp builds the run's parts (dfl.simulation.build: model and its initialisation,
parameter layout, graphs and W_t, schedule, algorithm hooks, the global test set) but never
trains: the nodes do. ``Recorder`` turns what the round brought back (train losses, client
models, local accuracies) into a metrics row with the keys README lists (the row
builders of dfl.metrics, as `dfl run`) and appends it through RunDir, so `dfl plot` /
`dfl report` read Flower runs like any other. There are no checkpoints: client optimizer state
lives on the devices, so a Flower run is not resumable with `dfl run --resume`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import DflError
from ..metrics import consensus_distance, evaluate, evaluated_row
from ..rundir.write import RunDir, prepare
from ..simulation import Parts


@dataclass
class Recorder:
    """Where a Flower run stands (cumulative MB, history) and its metrics rows."""

    parts: Parts
    writer: RunDir
    started: float = field(default_factory=time.perf_counter)
    comm_mb: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The round's train replies (train_loss, drift, active_clients) of the centralized strategy.
    round_extra: dict[str, Any] = field(default_factory=dict)
    #: The round's local accuracies, one per node that reported one.
    local_accs: list[float] = field(default_factory=list)

    def is_eval_round(self, round_: int) -> bool:
        """round_ counts completed rounds (1-based), as `dfl run`'s rows do."""
        cfg = self.parts.cfg
        return round_ % cfg.eval_every == 0 or round_ == cfg.rounds

    def local(self, accs: list[float]) -> None:
        self.local_accs = list(accs)

    def write(self, round_: int, bank: torch.Tensor, training: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the mean of `bank` (n, d) on the global test set and append the row with the
        round's ``training`` columns (dfl.metrics.round_row)."""
        p = self.parts
        test = evaluate(p.model, p.layout, bank.mean(0).to(p.device), p.x_test, p.y_test)
        row = {**evaluated_row(round_, test, self.local_accs, consensus_distance(bank), training),
               "wall_s": time.perf_counter() - self.started}
        self.history.append(row)
        self.writer.append(row)
        self.round_extra, self.local_accs = {}, []
        return row

    def finish(self, facts: dict[str, Any]) -> dict[str, Any]:
        """summary.json and manifest.json (with the Flower runtime's ``facts``)."""
        import flwr

        p = self.parts
        rounds = self.history[-1]["round"] if self.history else 0
        return self.writer.finish(self.history, rounds, {
            "device": str(p.device), "num_params": p.layout.size, "num_clients": len(p.steps),
            "batch_size": p.batch, "runtime": "flower", "flwr": flwr.__version__, **facts})


def open_run(cfg: Config, raw: dict[str, Any]) -> RunDir:
    """Prepare the run directory named by the run config's "out" (and "overwrite")."""
    out = Path(str(raw.get("out", "") or "runs/flower")).expanduser()
    overwrite = bool(raw.get("overwrite", False))
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise DflError(f"run config out: {out.resolve()} exists and is not empty; pass --run-config "
                       "'overwrite=true' to replace it, or another out=\"...\"")
    path = prepare(out, overwrite=overwrite)
    return RunDir(path, cfg, label=f"{cfg.label()} (Flower)" if not cfg.name else "")
