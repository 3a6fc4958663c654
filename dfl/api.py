"""`dfl.run`: what `dfl run` does, from Python (a notebook, a script), returning the history.

    import dfl
    history = dfl.run("experiments/quickstart.toml", out="runs/qs", overrides={"rounds": 20})
    history = dfl.run({"rounds": 5, "algorithm": {"name": "dfedavg"}}, out="runs/x", overwrite=True)
    history[-1]["test_acc"]

The run directory, the progress bar and the trackers of [logging] are those of `dfl run`; user
errors raise DflError (one line) before anything is written. A config with list-valued keys runs
every combination into one sweep directory and returns {variant directory name: history}.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Optional, Union

from .config import Config, to_dict
from .errors import DflError

History = list[dict[str, Any]]


def run(config: Union[Config, dict[str, Any], str, Path], out: Optional[Union[str, Path]] = None, *,
        overrides: Optional[dict[str, Any]] = None, overwrite: bool = False,
        quiet: bool = False) -> Union[History, dict[str, History]]:
    """Run an experiment as `dfl run` does and return its history.

    Args:
        config: a Config, a nested dict as TOML gives ({"local": {"lr": 0.05}}), or a TOML file.
        out: the run directory (default: runs/<config file name>, or runs/<config name or "run">).
        overrides: dotted keys to change, as `--set`: {"local.lr": 0.05, "seed": [0, 1, 2]}.
        overwrite: replace a non-empty ``out`` (else that is a DflError, as without --overwrite).
        quiet: no progress bar.
    Returns:
        the history: one dict per evaluated round (the rows of metrics.jsonl); for a config with
        list-valued keys (a sweep), {variant directory name: history} of the runs that finished.
    Raises:
        DflError: a user error (bad key or value, an existing ``out``, a tracker that is not
            installed), before the run directory is touched; or, for a sweep, runs that failed
            (after the others finished; each failed run's error.txt says why).
    """
    from . import sweep
    from .commands.run import preflight, run_one
    from .rundir.write import check_out, prepare

    raw, source, default = _raw(config)
    for key, value in (overrides or {}).items():
        sweep._set(raw, key, value)
    axes, variants = sweep.expand(raw, source)
    out = Path(out) if out is not None else Path("runs") / default
    check_out(out, overwrite=overwrite)
    sim = preflight([v.config for v in variants], keep=not axes)
    prepare(out, overwrite=overwrite)
    if not axes:
        run_one(variants[0].config, out, quiet=quiet, sim=sim)
        return sim.history
    from .commands.sweep import Task, execute

    sweep.write_index(out, source, axes, variants, raw)
    code = execute(out, [Task(v.name, v.config, out / v.name, False) for v in variants], 1, quiet)
    done = {v.name: read_history(out / v.name) for v in variants if (out / v.name / "summary.json").is_file()}
    if code:
        failed = [v.name for v in variants if v.name not in done]
        raise DflError(f"{len(failed)} of {len(variants)} runs of {out} failed ({', '.join(failed)}); "
                       f"see error.txt in their directories; finish with: dfl sweep --resume {out}")
    return done


def _raw(config: Any) -> tuple[dict[str, Any], str, str]:
    """(raw nested dict, source name for messages, default output directory name)."""
    from .config import read_toml

    if isinstance(config, Config):
        return to_dict(config), "config", config.name or "run"
    if isinstance(config, dict):
        return copy.deepcopy(config), "config", str(config.get("name") or "run")
    if isinstance(config, (str, Path)):
        return read_toml(config), str(config), Path(config).stem
    raise DflError(f"dfl.run: config must be a Config, a dict or a TOML file path, got {type(config).__name__}")


def read_history(path: Union[str, Path]) -> History:
    """The rows of a run directory's metrics.jsonl (a partial last line of a running run is left out)."""
    rows = []
    for line in (Path(path) / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
