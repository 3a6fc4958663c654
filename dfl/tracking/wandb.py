"""Weights & Biases: one W&B run per dfl run (files under <run dir>/wandb), offline or online;
config, metrics per round, files and figures."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from ..config import Config, to_dict
from ..errors import DflError
from .base import first_line, require_module, row_numbers


def check_wandb(mode: str) -> None:
    """The wandb package imports; online, an API key is set and the server answers. Else a
    one-line DflError saying how to fix it (or to log offline)."""
    require_module("wandb", "logging.wandb", "wandb")
    if mode != "online":
        return
    import netrc
    from urllib.parse import urlparse

    import requests

    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")
    host = urlparse(base).hostname or base
    key = os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
    if not key:
        with contextlib.suppress(OSError, netrc.NetrcParseError):
            key = (netrc.netrc(os.environ.get("NETRC")).authenticators(host) or (None, None, None))[2]
    if not key:
        raise DflError(f'logging.wandb = "online": no W&B API key for {host} (set WANDB_API_KEY or run '
                       '`wandb login`); or log offline: logging.wandb = "offline"')
    try:
        requests.head(base, timeout=10)
    except requests.RequestException as exc:
        raise DflError(f'logging.wandb = "online": cannot reach {base} ({first_line(exc)}); '
                       'log offline instead (logging.wandb = "offline", `wandb sync` later)') from None


class WandbTracker:
    """One W&B run (files under <run dir>/wandb): config, metrics per round, files, figures."""

    def __init__(self, mode: str, *, project: str, group: str, name: str, cfg: Config, out: Path,
                 run_id: Optional[str] = None):
        self.mode, self.project, self.group, self.name, self.cfg, self.out = mode, project, group, name, cfg, out
        self.run_id = run_id
        self.run: Any = None

    def start(self) -> None:
        import wandb

        self.run = wandb.init(project=self.project, group=self.group or None, name=self.name,
                              config=to_dict(self.cfg), dir=str(self.out), mode=self.mode, id=self.run_id,
                              resume="allow" if self.run_id else None, reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True))
        self.run_id = self.run.id

    def log_row(self, row: dict[str, Any]) -> None:
        self.run.log(row_numbers(row), step=int(row["round"]))

    def finish(self, summary: dict[str, Any], files: list[Path], figures: dict[str, Path]) -> None:
        import wandb

        if figures:
            self.run.log({f"figures/{n}": wandb.Image(str(p)) for n, p in figures.items()},
                         step=int(summary.get("rounds", 0)))
        for path in files:  # copied into the W&B run's files: stored (and synced) as they are now
            dst = Path(self.run.dir) / path.name
            shutil.copyfile(path, dst)
            self.run.save(str(dst), base_path=self.run.dir, policy="now")
        best = summary.get("best", {})
        self.run.summary.update({"best_test_acc": best.get("test_acc"), "best_round": best.get("round")})
        self.run.finish(exit_code=0)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=1)

    def ids(self) -> dict[str, Any]:
        return {"wandb_run_id": self.run_id}
