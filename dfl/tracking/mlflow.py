"""MLflow: one MLflow run per dfl run (params with dotted keys, metrics per round at step =
round, files and figures as artifacts), in an experiment named after the run or sweep directory
(or $MLFLOW_EXPERIMENT_NAME)."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import Config
from ..errors import DflError
from .base import first_line, flat_config, read_state, require_module, row_numbers


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
        require_module("mlflow", "logging.mlflow", "mlflow-skinny")
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
            raise DflError(f"logging.mlflow: cannot use the tracking URI {uri!r} ({first_line(exc)})") from None
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


def experiment_name(default: str) -> str:
    """$MLFLOW_EXPERIMENT_NAME, else `default` (the run or sweep directory's name)."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or default


def check_mlflow(uri: str) -> None:
    """The mlflow package imports and the tracking store at `uri` answers; else a one-line DflError."""
    MLflowTracker.client(uri, probe=True)


def run_tracker(cfg: Config, out: Path, name: str, sweep: Optional[Path], run_id: Optional[str]) -> MLflowTracker:
    """The MLflow run of the run directory ``out``: tagged with its label, seed and directory, in
    the experiment of its sweep (else of its own directory), nested under the sweep's parent run
    when `sweep` has one; ``run_id`` continues a resumed run's."""
    uri = cfg.logging.mlflow
    tags = {"dfl.label": cfg.label(), "dfl.seed": str(cfg.seed), "dfl.run_dir": str(out.resolve())}
    parent = read_state(sweep).get("mlflow_parents", {}).get(uri) if sweep else None
    if sweep:
        tags["dfl.sweep"] = sweep.name
    if parent:
        tags["mlflow.parentRunId"] = parent
    experiment = experiment_name(sweep.name if sweep else out.resolve().name)
    return MLflowTracker(uri, experiment=experiment, name=name, tags=tags, params=flat_config(cfg), run_id=run_id)


def sweep_tracker(uri: str, out: Path, run_id: Optional[str]) -> MLflowTracker:
    """The parent MLflow run of the sweep directory ``out`` that its variants nest under."""
    name = out.resolve().name
    return MLflowTracker(uri, experiment=experiment_name(name), name=name,
                         tags={"dfl.sweep": name, "dfl.run_dir": str(out.resolve())}, params={}, run_id=run_id)
