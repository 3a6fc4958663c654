"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, fed by `dfl run` / `dfl sweep`.

The config's [logging] table turns them on, in any combination::

    [logging]
    tensorboard = true                    # event files in <run dir>/tensorboard
    mlflow = "file:///home/me/mlruns"     # a tracking URI: a file store or "http://host:5000"
    wandb = "offline"                     # or "online"; wandb_project = "dfl", wandb_group = ""

One small class per tracker (start / log_row / finish / close), driven by `Trackers` beside the
run directory's writer (dfl/results.py): the training loop never sees them. `check` runs before
anything is written (the preflight of dfl/commands/run.py): a tracker whose package is missing or
whose server cannot be reached is a one-line DflError. The packages are imported here only, and
only when their tracker is on (`pip install "dfl[tracking]"`).

Each tracker gets the resolved config (TensorBoard hyperparameters, MLflow params with dotted
keys such as "local.rho", W&B config), every metrics row at step = round (its finite numbers;
"round" is the step), and at the end config.toml, metrics.jsonl, summary.json, manifest.json and
the run's figures (written to <run dir>/plots/ as `dfl plot DIR` names them). A tracker that
fails during a run (a server gone) is dropped with a warning; the run goes on.

A sweep directory is one MLflow experiment named after it, its variants nested under a parent
run (`sweep`), and one W&B group. Tracker run ids are kept in tracking.json (in run and sweep
directories): `--resume` continues the same tracker runs; rounds replayed after the checkpoint
are logged again (TensorBoard purges them first, W&B ignores steps it has seen).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import numbers
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .config import Config, dumps_toml, to_dict
from .errors import DflError, Interrupted

INSTALL = 'pip install "dfl[tracking]"'
STATE = "tracking.json"
"""Tracker run ids of a run (or sweep) directory, for --resume."""
FILES = ("config.toml", "metrics.jsonl", "summary.json", "manifest.json")
"""Files of the run directory that MLflow and W&B store with the run."""
HPARAM_METRICS = ("test_acc", "test_loss", "local_test_acc", "train_loss", "consensus", "comm_mb")
"""Scalars TensorBoard's HParams dashboard shows beside the hyperparameters."""

_checked: set[tuple[str, str]] = set()


# ---------------------------------------------------------------------------- helpers


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as {dotted key: value}: {"seed": 0, "local.rho": 0.05, ...} (None values left out)."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v

    walk(to_dict(cfg), "")
    return out


def row_numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, without "round" (the step)."""
    return {k: float(v) for k, v in row.items()
            if k != "round" and isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)}


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


def _warn(message: str) -> None:
    print(f"dfl: warning: {message}", file=sys.stderr)


def _require(module: str, key: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DflError(f"{key}: the {package} package is not installed; {INSTALL} "
                       f"(or pip install {package})") from None


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((Path(path) / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, **changes: Any) -> None:
    state = {**read_state(path), **changes}
    (Path(path) / STATE).write_text(json.dumps(state, indent=2) + "\n")


def sweep_dir(out: Path) -> Optional[Path]:
    """The sweep directory a run directory belongs to (it holds sweep.json), else None."""
    parent = Path(out).resolve().parent
    return parent if (parent / "sweep.json").is_file() else None


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for a block (those the user set are kept)."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)


# ---------------------------------------------------------------------------- checks


def check(configs: Iterable[Config]) -> None:
    """Every tracker the configs turn on is installed and reachable; else a one-line DflError.

    Each (tracker, target) is checked once per process."""
    for cfg in configs:
        lg = cfg.logging
        for kind, target, probe in (("tensorboard", "", _check_tensorboard), ("mlflow", lg.mlflow, _check_mlflow),
                                    ("wandb", lg.wandb, _check_wandb)):
            on = lg.tensorboard if kind == "tensorboard" else bool(target)
            if on and (kind, target) not in _checked:
                probe(target)
                _checked.add((kind, target))


def _check_tensorboard(_: str) -> None:
    _require("tensorboard", "logging.tensorboard", "tensorboard")
    _require("torch.utils.tensorboard", "logging.tensorboard", "tensorboard")


def _check_mlflow(uri: str) -> None:
    MLflowTracker.client(uri, probe=True)


def _check_wandb(mode: str) -> None:
    _require("wandb", "logging.wandb", "wandb")
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
        raise DflError(f'logging.wandb = "online": cannot reach {base} ({_first_line(exc)}); '
                       'log offline instead (logging.wandb = "offline", `wandb sync` later)') from None


# ---------------------------------------------------------------------------- TensorBoard


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


# ---------------------------------------------------------------------------- MLflow


def mlflow_uri(uri: str) -> str:
    """A tracking URI; a plain path becomes an absolute file: URI (a sweep's jobs share it)."""
    if "://" in uri or uri.startswith(("file:", "databricks")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


class MLflowTracker:
    """One MLflow run: params, metrics per round (step = round), files and figures as artifacts."""

    def __init__(self, uri: str, *, experiment: str, name: str, tags: dict[str, str],
                 params: dict[str, Any], run_id: Optional[str] = None):
        self.uri, self.experiment, self.name, self.tags, self.params = uri, experiment, name, tags, params
        self.run_id = run_id
        self.c: Any = None

    @staticmethod
    def client(uri: str, probe: bool = False) -> Any:
        """An MlflowClient for ``uri``; ``probe``: ask the store once, without retries."""
        _require("mlflow", "logging.mlflow", "mlflow-skinny")
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri(uri)
        if uri.startswith("file:"):  # MLflow 3 keeps the file store behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            client = MlflowClient(tracking_uri=uri)
            if probe:
                with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
                    client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure of the store is the user's to fix
            raise DflError(f"logging.mlflow: cannot use the tracking URI {uri!r} ({_first_line(exc)})") from None
        return client

    def _experiment_id(self) -> str:
        exp = self.c.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return self.c.create_experiment(self.experiment)
            except Exception:  # noqa: BLE001 - created meanwhile by a parallel job of the sweep
                exp = self.c.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise DflError(f"logging.mlflow: the experiment {self.experiment!r} is deleted in {self.uri}; "
                           "restore it (mlflow experiments restore) or set MLFLOW_EXPERIMENT_NAME")
        return exp.experiment_id

    def start(self) -> None:
        from mlflow.entities import Param

        self.c = self.client(self.uri)
        if self.run_id:
            try:
                self.c.update_run(self.run_id, status="RUNNING")
                return
            except Exception:  # noqa: BLE001 - the run was deleted: start a new one
                self.run_id = None
        run = self.c.create_run(self._experiment_id(), run_name=self.name, tags=self.tags)
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in self.params.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.c.log_batch(self.run_id, params=params[i:i + 100])

    def log_row(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        ms, step = int(time.time() * 1000), int(row["round"])
        self.c.log_batch(self.run_id, metrics=[Metric(k, v, ms, step) for k, v in row_numbers(row).items()])

    def finish(self, summary: dict[str, Any], files: list[Path], figures: dict[str, Path]) -> None:
        for path in files:
            self.c.log_artifact(self.run_id, str(path))
        for path in figures.values():
            self.c.log_artifact(self.run_id, str(path), artifact_path="figures")
        self.c.set_terminated(self.run_id, "FINISHED")

    def close(self, status: str) -> None:
        self.c.set_terminated(self.run_id, status)

    def ids(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id, "mlflow_uri": self.uri}


def _experiment_name(default: str) -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or default


# ---------------------------------------------------------------------------- W&B


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


# ---------------------------------------------------------------------------- one run


class Trackers:
    """The trackers of one run, as callbacks beside the run directory's writer.

        trackers = start(cfg, out, title=...)      # before the first round
        trackers.log_row(row)                      # in on_round, after the writer
        trackers.finish(summary)                   # after RunDir.finish: files and figures
        trackers.close(error)                      # always (finally): ends unfinished runs
    """

    def __init__(self, out: Path, trackers: list[Any]):
        self.out, self.trackers = Path(out), trackers

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, what: str, call: Any) -> None:
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as exc:  # noqa: BLE001 - a tracker's failure must not stop the run
                self.trackers.remove(t)
                _warn(f"{type(t).__name__} stopped ({what}: {_first_line(exc)}); the run goes on without it")
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
    from . import plots, rundir

    try:
        figs = plots.make_figures([rundir.load_run(out)])
        return {name: plots.save(fig, Path(out) / "plots" / f"{name}.png", dpi=100) for name, fig in figs.items()}
    except Exception as exc:  # noqa: BLE001 - the run is done; its figures are an extra
        _warn(f"{out}: figures not drawn for the trackers ({_first_line(exc)})")
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
    sweep = sweep_dir(out)
    state = read_state(out) if start_round else {}
    name = title or cfg.label()
    trackers: list[Any] = []
    if lg.tensorboard:
        trackers.append(TensorBoardTracker(out / "tensorboard", cfg, start_round))
    if lg.mlflow:
        tags = {"dfl.label": cfg.label(), "dfl.seed": str(cfg.seed), "dfl.run_dir": str(out.resolve())}
        parent = read_state(sweep).get("mlflow_parents", {}).get(lg.mlflow) if sweep else None
        if sweep:
            tags["dfl.sweep"] = sweep.name
        if parent:
            tags["mlflow.parentRunId"] = parent
        experiment = _experiment_name(sweep.name if sweep else out.resolve().name)
        trackers.append(MLflowTracker(lg.mlflow, experiment=experiment, name=name, tags=tags,
                                      params=flat_config(cfg), run_id=state.get("mlflow_run_id")))
    if lg.wandb:
        trackers.append(WandbTracker(lg.wandb, project=lg.wandb_project,
                                     group=lg.wandb_group or (sweep.name if sweep else ""), name=name, cfg=cfg,
                                     out=out, run_id=state.get("wandb_run_id")))
    started: list[Any] = []
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
        raise DflError(f"{type(t).__name__} could not start ({_first_line(exc)})") from None
    _write_state(out, **{k: v for t in trackers for k, v in t.ids().items()})
    return Trackers(out, trackers)


# ---------------------------------------------------------------------------- a sweep


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
        t = MLflowTracker(uri, experiment=_experiment_name(out.resolve().name), name=out.resolve().name,
                          tags={"dfl.sweep": out.resolve().name, "dfl.run_dir": str(out.resolve())},
                          params={}, run_id=parents.get(uri))
        t.start()
        parents[uri] = t.run_id
        runs.append(t)
    _write_state(out, mlflow_parents=parents)
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
