"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, fed by `dfl run` / `dfl sweep`.

The config's [logging] table turns them on, in any combination::

    [logging]
    tensorboard = true                    # event files in <run dir>/tensorboard
    mlflow = "file:///home/me/mlruns"     # a tracking URI: a file store or "http://host:5000"
    wandb = "offline"                     # or "online"; wandb_project = "dfl", wandb_group = ""

One small class per tracker (start / log_row / finish / close), driven by `Trackers` beside the
run directory's writer (dfl/rundir/write.py): the training loop never sees them. `check` runs before
anything is written (the preflight of dfl/commands/run.py): a tracker whose package is missing or
whose server cannot be reached is a one-line DflError. The packages are imported in this package only,
and only when their tracker is on (`pip install "dfl[tracking]"`).

Each tracker gets the resolved config (TensorBoard hyperparameters, MLflow params with dotted
keys such as "local.rho", W&B config), every metrics row at step = round (its finite numbers;
"round" is the step), and at the end config.toml, metrics.jsonl, summary.json, manifest.json and
the run's figures (written to <run dir>/plots/ as `dfl plot DIR` names them). A tracker that
fails during a run (a server gone) is dropped with a warning; the run goes on.

A sweep directory is one MLflow experiment named after it, its variants nested under a parent
run (`sweep`), and one W&B group. Tracker run ids are kept in tracking.json (in run and sweep
directories): `--resume` continues the same tracker runs; rounds replayed after the checkpoint
are logged again (TensorBoard purges them first, W&B ignores steps it has seen).

    base.py         the Tracker interface, config / metrics rows as trackers take them, tracking.json
    tensorboard.py  TensorBoardTracker
    mlflow.py       MLflowTracker (and a sweep's parent run)
    wandb.py        WandbTracker
    session.py      check, start -> Trackers (one run), sweep (a sweep's runs)
"""
from .base import FILES, INSTALL, STATE, Tracker, flat_config, read_state, row_numbers, sweep_dir
from .mlflow import MLflowTracker, mlflow_uri
from .session import Trackers, check, start, sweep, write_figures
from .tensorboard import HPARAM_METRICS, TensorBoardTracker
from .wandb import WandbTracker

__all__ = ["FILES", "HPARAM_METRICS", "INSTALL", "MLflowTracker", "STATE", "TensorBoardTracker", "Tracker",
           "Trackers", "WandbTracker", "check", "flat_config", "mlflow_uri", "read_state", "row_numbers", "start",
           "sweep", "sweep_dir", "write_figures"]
