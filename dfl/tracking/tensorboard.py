"""TensorBoard: event files in <run dir>/tensorboard (scalars per round, hyperparameters, the
config, figures), written with torch.utils.tensorboard."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config, dumps_toml, to_dict
from .base import flat_config, require_module, row_numbers

HPARAM_METRICS = ("test_acc", "test_loss", "local_test_acc", "train_loss", "consensus", "comm_mb")
"""Scalars TensorBoard's HParams dashboard shows beside the hyperparameters."""


def check_tensorboard(_: str = "") -> None:
    """The tensorboard package and torch.utils.tensorboard import; else a one-line DflError."""
    require_module("tensorboard", "logging.tensorboard", "tensorboard")
    require_module("torch.utils.tensorboard", "logging.tensorboard", "tensorboard")


class TensorBoardTracker:
    """Event files in ``logdir``: scalars per round, hyperparameters, the config, figures."""

    def __init__(self, logdir: Path, cfg: Config, start_round: int = 0):
        self.logdir, self.cfg, self.start_round = Path(logdir), cfg, start_round
        self.writer: Any = None

    def start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # a resumed run drops what the killed one logged after its checkpoint
        self.writer = SummaryWriter(str(self.logdir), purge_step=self.start_round + 1 if self.start_round else None)
        if not self.start_round:
            exp, ssi, _ = hparams(flat_config(self.cfg), {k: 0.0 for k in HPARAM_METRICS})
            self.writer.file_writer.add_summary(exp)
            self.writer.file_writer.add_summary(ssi)
            toml = dumps_toml(to_dict(self.cfg))
            self.writer.add_text("config", "\n".join("    " + line for line in toml.splitlines()))  # a code block

    def log_row(self, row: dict[str, Any]) -> None:
        step = int(row["round"])
        for key, value in row_numbers(row).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, summary: dict[str, Any], files: list[Path], figures: dict[str, Path]) -> None:
        from matplotlib.image import imread
        from torch.utils.tensorboard.summary import hparams

        for name, path in figures.items():
            self.writer.add_image(f"figures/{name}", imread(path)[..., :3], int(summary.get("rounds", 0)),
                                  dataformats="HWC")
        self.writer.file_writer.add_summary(hparams(flat_config(self.cfg), {})[2])  # session end: success
        self.writer.close()

    def close(self, status: str) -> None:
        self.writer.close()

    def ids(self) -> dict[str, Any]:
        return {}
