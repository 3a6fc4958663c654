"""Runs as a pandas DataFrame: `dfl.load_runs(DIR)` and `dfl.summarize(df, by=[...])`.

    import dfl
    df = dfl.load_runs("runs/mgs_sweep")            # a run, a sweep, a directory of them, or a list
    df[df["round"] == df["round"].max()]             # the last evaluated round of every run
    dfl.summarize(df)                                # mean +- std over seeds, one row per variant
    dfl.summarize(df, by=["algorithm.gossip_steps"], metrics=["test_acc", "consensus"])

One row per run and evaluated round. Columns: run (its directory), label (the run's label, "(Flower)"
for Flower runs), variant (the label of its runs that differ only by seed: `dfl report`'s rows),
seed, runtime ("dfl" or "flower"), then every config key that differs between the runs loaded
(dotted: "algorithm.gossip_steps"), then round and every metric of metrics.jsonl (NaN where a row
lacks it). pandas is imported when these are called (`pip install "dfl[analysis]"`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from .errors import DflError

ID_COLUMNS = ("run", "label", "variant", "seed", "runtime")
"""The first columns of `load_runs`: which run a row belongs to."""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise DflError('dfl.load_runs / dfl.summarize need pandas: pip install "dfl[analysis]" '
                       "(or pip install pandas)") from None
    return pandas


def load_runs(paths: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]) -> Any:
    """Read run directories (a run, a sweep, a directory holding either, or a list) into one DataFrame.

    Returns:
        a pandas DataFrame, one row per run and evaluated round (columns: see the module docstring);
        the values are those of each run's metrics.jsonl.
    Raises:
        DflError: no run directory there, or a malformed file (named with its line).
    """
    pd = _pandas()
    from .config import Config
    from .rundir.groups import flat_keys, group_runs
    from .rundir.read import load_runs as read_runs

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    runs = read_runs([Path(p) for p in paths])
    variant = {id(r): g.label for g in group_runs(runs) for r in g.runs}
    defaults = flat_keys(asdict(Config()))
    flats = [{**defaults, **flat_keys(r.config)} for r in runs]
    keys = [k for k in dict.fromkeys(k for f in flats for k in f) if k != "seed"
            and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    frames = []
    for run, flat in zip(runs, flats):
        ids = {"run": str(run.path), "label": run.label, "variant": variant[id(run)], "seed": run.seed,
               "runtime": str(run.manifest.get("runtime", "dfl"))}
        frame = pd.DataFrame({**{k: [v] * run.rounds for k, v in ids.items()},
                              **{k: [flat.get(k)] * run.rounds for k in keys}, **run.metrics})
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True, sort=False)
    df["round"] = df["round"].astype(int)
    return df


def summarize(df: Any, by: Optional[Sequence[str]] = None, metrics: Optional[Sequence[str]] = None,
              at: Union[str, int] = "final") -> Any:
    """Mean and sample std of each metric over the runs of each group (the seeds of a variant).

    Args:
        df: a DataFrame as `load_runs` gives (its "run" column tells runs apart).
        by: the columns to group by; default ["variant"], the runs equal but for their seed (as
            `dfl report` groups them). Groups keep their order of first appearance.
        metrics: the metric columns; default every numeric column after "round".
        at: "final": each run's last recorded value of each metric (as `dfl report`'s final
            columns); or a round number: the values at that round.
    Returns:
        a DataFrame indexed by ``by``: n (runs in the group), then <metric>_mean and <metric>_std
        for each metric (std with ddof = 1, as `dfl report`; NaN for n = 1; NaN values are skipped).
    """
    pd = _pandas()
    by = list(by) if by is not None else ["variant"]
    missing = [c for c in [*by, "run", "round"] if c not in df.columns]
    if missing:
        raise DflError(f"summarize: no column {missing[0]!r} in the DataFrame; columns: "
                       + ", ".join(map(str, df.columns)))
    if metrics is None:
        after = list(df.columns)[list(df.columns).index("round") + 1:]
        metrics = [c for c in after if pd.api.types.is_numeric_dtype(df[c]) and c not in by]
    unknown = [m for m in metrics if m not in df.columns]
    if unknown:
        raise DflError(f"summarize: no metric {unknown[0]!r} in the DataFrame")
    if at == "final":
        per_run = df.groupby("run", sort=False).last()  # last non-null value of each column
    elif isinstance(at, int) and not isinstance(at, bool):
        per_run = df[df["round"] == at].groupby("run", sort=False).last()
        if per_run.empty:
            raise DflError(f"summarize: no run has an evaluated round {at}")
    else:
        raise DflError(f'summarize: at must be "final" or a round number, got {at!r}')
    grouped = per_run.groupby(by, sort=False, dropna=False)
    out = pd.DataFrame({"n": grouped.size()})
    for m in metrics:
        col = grouped[m]
        same = (col.max() == col.min()) & (col.count() > 1)  # exactly 0, not 1e-17 of rounding
        out[f"{m}_mean"] = col.mean()
        out[f"{m}_std"] = col.std(ddof=1).mask(same, 0.0)
    return out
