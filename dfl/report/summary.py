"""The numbers of a report's summary table: one row per variant (runs that differ only by seed).

Per variant: n, final and best test accuracy of the averaged model (mean +- sample std over the
n seeds; n = 1 shows no std), the difference of the mean final accuracy to a baseline variant
(default: the first DFedAvg, else FedAvg, else the first variant; +- the standard error of the
difference when both have n > 1), final mean local accuracy, rounds and cumulative MB to first
reach the target accuracy (default: 90% of the best final accuracy of any run), simulated
seconds to reach it (only when runs recorded sim_time_s, [system]), final consensus distance,
spectral gap, wall time. dfl.report.text and dfl.report.page render them.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from ..errors import DflError
from ..rundir.groups import Group, group_runs
from ..rundir.read import Run, load_runs

DEFAULT_TARGET_FRACTION = 0.9
"""Default target accuracy: this fraction of the best final test accuracy seen."""


def default_target(runs: Iterable[Run]) -> float:
    """DEFAULT_TARGET_FRACTION of the best final test accuracy among the runs."""
    finals = [r.final("test_acc") for r in runs]
    finals = [f for f in finals if math.isfinite(f)]
    if not finals:
        raise DflError("no run recorded test_acc: cannot pick a target accuracy")
    return DEFAULT_TARGET_FRACTION * max(finals)


def time_to_target(run: Run, target: float) -> Optional[tuple[float, float]]:
    """(round, cumulative MB) of the first evaluation with test_acc >= target, or None."""
    acc = run.metrics.get("test_acc")
    if acc is None:
        return None
    hit = np.flatnonzero(np.nan_to_num(acc, nan=-np.inf) >= target)
    if not hit.size:
        return None
    i = int(hit[0])
    mb = run.metrics.get("comm_mb")
    return float(run.metrics["round"][i]), float(mb[i]) if mb is not None else math.nan


def sim_time_to_target(run: Run, target: float) -> Optional[float]:
    """Simulated seconds (sim_time_s, [system]) at the first evaluation with test_acc >= target;
    None when not reached or not recorded there."""
    hit = time_to_target(run, target)
    if hit is None or not run.has("sim_time_s"):
        return None
    i = int(np.flatnonzero(run.metrics["round"] == hit[0])[0])
    value = float(run.metrics["sim_time_s"][i])
    return value if math.isfinite(value) else None


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN for one value) and count of the finite values."""
    v = np.array([x for x in values if math.isfinite(x)])
    if not v.size:
        return math.nan, math.nan, 0
    if v.size == 1:
        return float(v[0]), math.nan, 1
    return float(v.mean()), float(v.std(ddof=1)) if np.ptp(v) > 0 else 0.0, int(v.size)  # no 1e-18 noise


DEFAULT_BASELINES = ("dfedavg", "fedavg")
"""The default baseline: the first variant running one of these (in this order), else the first."""


def pick_baseline(groups: Sequence[Group], label: Optional[str] = None) -> Group:
    """The baseline variant: the group labelled `label` (exact, else case-insensitive), or the default.

    Raises:
        DflError: no group has that label (the message lists the labels there are).
    """
    if label is None:
        for algo in DEFAULT_BASELINES:
            for g in groups:
                if g.algorithm == algo and g.method == algo:
                    return g
        return groups[0]
    found = [g for g in groups if g.label == label] or [g for g in groups if g.label.lower() == label.lower()]
    if len(found) != 1:
        labels = [g.label for g in groups]
        close = difflib.get_close_matches(label, labels, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DflError(f"--baseline {label!r}: no such variant{hint}; choose one of "
                       + "; ".join(map(repr, labels)))
    return found[0]


def _delta(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float]:
    """(mean a - mean b, standard error of that difference); the error is NaN unless both n > 1."""
    se = math.sqrt(a[1] ** 2 / a[2] + b[1] ** 2 / b[2]) if a[2] > 1 and b[2] > 1 else math.nan
    return a[0] - b[0], se


def _gap(g: Group) -> np.ndarray:
    """Each seed's spectral gap; for a time-varying graph its period's (one round's is 0)."""
    return g.finals("period_gap") if all(r.has("period_gap") for r in g.runs) else g.finals("spectral_gap")


def summarize(groups: Sequence[Group], target: float, baseline: Optional[Group] = None) -> list[dict[str, Any]]:
    """One dict per group with the numbers of the summary table (NaN where not recorded).

    Statistics are (mean, sample std, n) over the group's seeds; "delta_acc" is (mean final
    accuracy - the baseline's, its standard error) and "baseline" marks the baseline's row.
    """
    baseline = baseline or pick_baseline(groups)
    timed = any(r.has("sim_time_s") for g in groups for r in g.runs)
    rows = []
    for g in groups:
        hits = [time_to_target(r, target) for r in g.runs]
        reached = [h for h in hits if h is not None]
        best = [float(np.nanmax(r.metrics["test_acc"])) if r.has("test_acc") else math.nan for r in g.runs]
        rows.append({
            "label": g.label, "seeds": len(g.runs), "rounds": _stats([r.final("round") for r in g.runs])[0],
            "final_acc": _stats(g.finals("test_acc")), "best_acc": _stats(best),
            "final_local_acc": _stats(g.finals("local_test_acc")),
            "reached": len(reached),
            "rounds_to_target": _stats([h[0] for h in reached]), "mb_to_target": _stats([h[1] for h in reached]),
            "final_consensus": _stats(g.finals("consensus")), "spectral_gap": _stats(_gap(g)),
            "wall_s": _stats(g.finals("wall_s")), "baseline": g is baseline,
        })
        if timed:  # simulated seconds to the target: a column only when some run has [system]
            secs = [s for s in (sim_time_to_target(r, target) for r in g.runs) if s is not None]
            rows[-1]["s_to_target"] = _stats(secs)
            rows[-1]["s_reached"] = len(secs) if all(r.has("sim_time_s") for r in g.runs) else -1
        rows[-1]["delta_acc"] = _delta(rows[-1]["final_acc"], _stats(baseline.finals("test_acc")))
    return rows


def table_note(baseline: str, target: float, target_how: str) -> str:
    """The sentence under the summary table: what the numbers are, which variant is the baseline."""
    return (f"n: seeds per variant (runs whose configs differ only by seed); mean \u00b1 sample std over "
            f"the n seeds (no std for n = 1). Baseline: {baseline}; \u0394 is the difference of the mean "
            f"final test accuracy to the baseline's, in percentage points (\u00b1 its standard error when "
            f"both have n > 1). Target test accuracy {100 * target:.2f}% ({target_how}). Accuracies are "
            f"of the averaged model unless marked local; MB are cumulative, summed over all clients; the spectral gap "
            f"of a time-varying graph is that of one period's product of mixing matrices.")


@dataclass
class Summary:
    """The runs under some paths, grouped by seed, with the summary table's rows."""

    runs: list[Run]
    groups: list[Group]
    rows: list[dict[str, Any]]
    target: float
    target_how: str
    baseline: Group

    @property
    def note(self) -> str:
        return table_note(self.baseline.label, self.target, self.target_how)


def summary(paths: Sequence[str | Path], target: Optional[float] = None, baseline: Optional[str] = None,
            on_note: Optional[Callable[[str], None]] = None) -> Summary:
    """Read the runs under `paths`, group them by seed and compute the summary table.

    Args:
        paths: directories as `load_runs` takes them.
        target: target test accuracy in (0, 1]; default 90% of the best final accuracy.
        baseline: label of the baseline variant (default: see `pick_baseline`).
        on_note: called with each note (e.g. skipped sweep members).
    """
    runs = load_runs([Path(p) for p in paths], on_skip=on_note)
    groups = group_runs(runs)
    base = pick_baseline(groups, baseline)
    if target is None:
        target = default_target(runs)
        target_how = f"{100 * DEFAULT_TARGET_FRACTION:.0f}% of the best final test accuracy"
    else:
        best = max((r.final("test_acc") for r in runs if r.has("test_acc")), default=math.nan)
        if not 0 < target <= 1:
            hint = f"; give a fraction, e.g. {target / 100:g}" if target > 1 and (math.isnan(best) or best <= 1) else ""
            raise DflError(f"target accuracy must be in (0, 1], got {target:g}{hint}")
        target_how = "given"
    for g in groups:
        dup = sorted({s for s in g.seeds if g.seeds.count(s) > 1})
        if dup and on_note:
            on_note(f"{g.label}: seed {', '.join(map(str, dup))} appears in more than one run directory; "
                    "each counts in n")
    return Summary(runs, groups, summarize(groups, target, base), target, target_how, base)
