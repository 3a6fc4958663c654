"""The summary table as plain text: its cells, its header and the Markdown table of
`dfl report --markdown` (the HTML page escapes the same cells)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .summary import summary

_FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda x: f"{100 * x:.2f}", "sci": lambda x: f"{x:.2e}", "int": lambda x: f"{x:.0f}",
    "num": lambda x: f"{x:.3g}"}


def _fmt(stat: tuple[float, float, int], kind: str) -> str:
    """'mean ± std' as plain text; the mean alone for n = 1; an em dash when nothing was recorded."""
    mean, std, n = stat
    if not n:
        return "\u2014"
    f = _FORMATS[kind]
    spread = f"{std:.2g}" if kind == "num" else f(std)  # 0.48 +- 0.59, not +- 0.586
    return f(mean) + (f" \u00b1 {spread}" if n > 1 else "")


def header(target: float, timed: bool = False) -> list[str]:
    """The column titles; `timed` adds simulated seconds to the target ([system] runs)."""
    return ["variant", "n", "rounds", "final acc. %", "\u0394 final acc. vs baseline (pp)", "best acc. %",
            "final local acc. %", f"rounds to {100 * target:.1f}%", f"MB to {100 * target:.1f}%",
            *([f"sim. s to {100 * target:.1f}%"] if timed else []),
            "final consensus", "spectral gap", "wall s"]


def has_sim_time(rows: list[dict[str, Any]]) -> bool:
    """Whether the table has the simulated-seconds column (some run recorded sim_time_s)."""
    return any("s_to_target" in r for r in rows)


def _sim_cell(r: dict[str, Any]) -> list[str]:
    """The simulated-seconds-to-target cell: none when no run has [system], a dash for a variant
    without it."""
    if "s_to_target" not in r:
        return []
    if r["s_reached"] < 0:
        return ["\u2014"]
    if not r["s_reached"]:
        return ["not reached"]
    partial = "" if r["s_reached"] == r["seeds"] else f" ({r['s_reached']}/{r['seeds']} seeds)"
    return [_fmt(r["s_to_target"], "num") + partial]


def cells(r: dict[str, Any]) -> list[str]:
    """One row of the summary table as plain text (the HTML and Markdown tables escape it)."""
    partial = "" if r["reached"] == r["seeds"] else f" ({r['reached']}/{r['seeds']} seeds)"
    to_r = "not reached" if not r["reached"] else _fmt(r["rounds_to_target"], "int") + partial
    to_mb = "not reached" if not r["reached"] else _fmt(r["mb_to_target"], "num") + partial
    d, se = r["delta_acc"]
    if r["baseline"]:
        delta = "baseline"
    elif not math.isfinite(d):
        delta = "\u2014"
    else:
        delta = f"{100 * d:+.2f}" + (f" \u00b1 {100 * se:.2f}" if math.isfinite(se) else "")
    rounds = f"{r['rounds']:.0f}" if math.isfinite(r["rounds"]) else "\u2014"
    return [r["label"], str(r["seeds"]), rounds, _fmt(r["final_acc"], "pct"), delta, _fmt(r["best_acc"], "pct"),
            _fmt(r["final_local_acc"], "pct"), to_r, to_mb, *_sim_cell(r), _fmt(r["final_consensus"], "num"),
            _fmt(r["spectral_gap"], "num"), _fmt(r["wall_s"], "num")]


def markdown_table(rows: list[dict[str, Any]], target: float) -> str:
    """The summary table as a GitHub Markdown table (numbers right-aligned, '|' escaped)."""
    def line(items: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in items) + " |"

    head = header(target, has_sim_time(rows))
    out = [line(head), "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    return "\n".join(out + [line(cells(r)) for r in rows])


def build_markdown(paths: Sequence[str | Path], target: Optional[float] = None, baseline: Optional[str] = None,
                   on_note: Optional[Callable[[str], None]] = None) -> str:
    """The summary table as Markdown followed by its note (what n, +- and the baseline are)."""
    s = summary(paths, target, baseline, on_note)
    return markdown_table(s.rows, s.target) + "\n\n" + s.note + "\n"
