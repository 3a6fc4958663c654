"""The trackers of one run (`start` -> `Trackers`) and of a sweep (`sweep`), and the check that
every tracker a config turns on is installed and reachable (`check`, before anything is written)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ..config import Config
from ..errors import DflError, Interrupted
from .base import FILES, Tracker, first_line, read_state, sweep_dir, warn, write_state
from .mlflow import check_mlflow, run_tracker, sweep_tracker
from .tensorboard import TensorBoardTracker, check_tensorboard
from .wandb import WandbTracker, check_wandb

_checked: set[tuple[str, str]] = set()


def check(configs: Iterable[Config]) -> None:
    """Every tracker the configs turn on is installed and reachable; else a one-line DflError.

    Each (tracker, target) is checked once per process."""
    for cfg in configs:
        lg = cfg.logging
        for kind, target, probe in (("tensorboard", "", check_tensorboard), ("mlflow", lg.mlflow, check_mlflow),
                                    ("wandb", lg.wandb, check_wandb)):
            on = lg.tensorboard if kind == "tensorboard" else bool(target)
            if on and (kind, target) not in _checked:
                probe(target)
                _checked.add((kind, target))


class Trackers:
    """The trackers of one run, as callbacks beside the run directory's writer.

        trackers = start(cfg, out, title=...)      # before the first round
        trackers.log_row(row)                      # in on_round, after the writer
        trackers.finish(summary)                   # after RunDir.finish: files and figures
        trackers.close(error)                      # always (finally): ends unfinished runs
    """

    def __init__(self, out: Path, trackers: list[Tracker]):
        self.out, self.trackers = Path(out), trackers

    def _each(self, what: str, call: Any) -> None:
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as exc:  # noqa: BLE001 - a tracker's failure must not stop the run
                self.trackers.remove(t)
                warn(f"{type(t).__name__} stopped ({what}: {first_line(exc)}); the run goes on without it")
                with contextlib.suppress(Exception):
                    t.close("FAILED")

    def log_row(self, row: dict[str, Any]) -> None:
        self._each(f"round {row.get('round')}", lambda t: t.log_row(row))

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.trackers:
            return
        files = [self.out / f for f in FILES if (self.out / f).is_file()]
        figures = write_figures(self.out)
        self._each("at the end", lambda t: t.finish(summary, files, figures))
        self.trackers = []

    def close(self, error: Optional[BaseException] = None) -> None:
        """End the trackers still open: KILLED after Ctrl-C / SIGTERM, FAILED after an error."""
        status = "KILLED" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "FAILED"
        for t in self.trackers:
            with contextlib.suppress(Exception):
                t.close(status)
        self.trackers = []


def write_figures(out: Path) -> dict[str, Path]:
    """The run's figures (dfl.plots, screen style) as <out>/plots/<name>.png; {} if they cannot be drawn."""
    from .. import plots
    from ..rundir.read import load_run

    try:
        figs = plots.make_figures([load_run(out)])
        return {name: plots.save(fig, Path(out) / "plots" / f"{name}.png", dpi=100) for name, fig in figs.items()}
    except Exception as exc:  # noqa: BLE001 - the run is done; its figures are an extra
        warn(f"{out}: figures not drawn for the trackers ({first_line(exc)})")
        return {}


def start(cfg: Config, out: str | Path, *, title: str = "", start_round: int = 0) -> Trackers:
    """Start the trackers the config turns on for the run directory ``out``.

    Args:
        cfg: the run's (resolved) config.
        title: the run's name in the trackers (a sweep's variant directory name), default the label.
        start_round: the round a resumed run continues after (0: a new run); a resumed run
            continues the tracker runs recorded in <out>/tracking.json.
    Raises:
        DflError: a tracker is not installed or not reachable (one line).
    """
    out, lg = Path(out), cfg.logging
    if not (lg.tensorboard or lg.mlflow or lg.wandb):
        return Trackers(out, [])
    check([cfg])
    trackers = _trackers(cfg, out, title or cfg.label(), read_state(out) if start_round else {}, start_round)
    started: list[Tracker] = []
    try:
        for t in trackers:
            t.start()
            started.append(t)
    except BaseException as exc:
        for t in started:
            with contextlib.suppress(Exception):
                t.close("FAILED")
        if isinstance(exc, DflError):
            raise
        raise DflError(f"{type(t).__name__} could not start ({first_line(exc)})") from None
    write_state(out, **{k: v for t in trackers for k, v in t.ids().items()})
    return Trackers(out, trackers)


def _trackers(cfg: Config, out: Path, name: str, state: dict[str, Any], start_round: int) -> list[Tracker]:
    """The trackers the config's [logging] turns on, not yet started; `state` holds the tracker
    run ids a resumed run continues."""
    lg, sweep = cfg.logging, sweep_dir(out)
    trackers: list[Tracker] = []
    if lg.tensorboard:
        trackers.append(TensorBoardTracker(out / "tensorboard", cfg, start_round))
    if lg.mlflow:
        trackers.append(run_tracker(cfg, out, name, sweep, state.get("mlflow_run_id")))
    if lg.wandb:
        trackers.append(WandbTracker(lg.wandb, project=lg.wandb_project,
                                     group=lg.wandb_group or (sweep.name if sweep else ""), name=name, cfg=cfg,
                                     out=out, run_id=state.get("wandb_run_id")))
    return trackers


@contextlib.contextmanager
def sweep(out: str | Path, configs: Iterable[Config]) -> Iterator[dict[str, Any]]:
    """Around a sweep's runs: the MLflow parent run (one per tracking URI) its variants nest under,
    reopened by --resume; ended FINISHED, FAILED (an error, or ``outcome["failed"]`` set by the
    caller) or KILLED, with sweep.json as an artifact. Yields the outcome dict to mark."""
    out = Path(out)
    uris = list(dict.fromkeys(c.logging.mlflow for c in configs if c.logging.mlflow))
    outcome: dict[str, Any] = {}
    if not uris:
        yield outcome
        return
    parents = dict(read_state(out).get("mlflow_parents", {}))
    runs = []
    for uri in uris:
        t = sweep_tracker(uri, out, parents.get(uri))
        t.start()
        parents[uri] = t.run_id
        runs.append(t)
    write_state(out, mlflow_parents=parents)
    status = "FAILED"
    try:
        yield outcome
        status = "FAILED" if outcome.get("failed") else "FINISHED"
    except (Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        for t in runs:
            with contextlib.suppress(Exception):
                if (out / "sweep.json").is_file():
                    t.c.log_artifact(t.run_id, str(out / "sweep.json"))
                t.close(status)
