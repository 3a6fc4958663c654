"""One self-contained HTML page for a sweep (or any set of runs): config, summary table, figures.

The page has no external resources: CSS inline, figures as base64 PNG <img>. Everything from
the files (labels, config text, paths) is HTML-escaped.

    html = build_report(["runs/sweep1"], target=0.8)
    write_report(html, "runs/sweep1/report.html")

Summary table, one row per group of seeds: final and best test accuracy of the averaged model
(mean +- sample std over seeds), final mean local accuracy, rounds and cumulative MB to first
reach the target accuracy (default: 90% of the best final accuracy of any run), final consensus
distance, spectral gap, wall time.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from . import __version__
from .errors import DflError
from .rundir import Group, Run, group_runs, load_runs, read_sweep

DEFAULT_TARGET_FRACTION = 0.9
"""Default target accuracy: this fraction of the best final test accuracy seen."""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{padding:3px 6px;border-bottom:1px solid #e4e4e4;
text-align:right;white-space:nowrap}th{background:#f5f5f5;white-space:normal;vertical-align:bottom}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:12px}figure{margin:1.5em 0}
.scroll{overflow-x:auto}img{max-width:100%;height:auto}figcaption{font-size:13px;color:#555}.note{color:#a33}.muted{color:#777}
"""


# ---------------------------------------------------------------------------- numbers


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


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the finite values."""
    v = np.array([x for x in values if math.isfinite(x)])
    if not v.size:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def summarize(groups: Sequence[Group], target: float) -> list[dict[str, Any]]:
    """One dict per group with the numbers of the summary table (NaN where not recorded)."""
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
            "final_consensus": _stats(g.finals("consensus")), "spectral_gap": _stats(g.finals("spectral_gap")),
            "wall_s": _stats(g.finals("wall_s")),
        })
    return rows


# ---------------------------------------------------------------------------- html


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(stat: tuple[float, float, int], kind: str) -> str:
    mean, std, n = stat
    if not n:
        return "&mdash;"
    f = {"pct": lambda x: f"{100 * x:.2f}", "sci": lambda x: f"{x:.2e}", "int": lambda x: f"{x:.0f}",
         "num": lambda x: f"{x:.3g}", "mb": lambda x: f"{x:.3g}"}[kind]
    return f(mean) + (f" &plusmn; {f(std)}" if n > 1 and std > 0 else "")


def _table(rows: list[dict[str, Any]], target: float) -> str:
    head = ["group", "seeds", "rounds", "final acc. %", "best acc. %", "final local acc. %",
            f"rounds to {100 * target:.1f}%", f"MB to {100 * target:.1f}%", "final consensus", "spectral gap", "wall s"]
    out = ["<div class='scroll'><table id='summary'><thead><tr>"
           + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        partial = "" if r["reached"] == r["seeds"] else \
            f" <span class='muted'>({r['reached']}/{r['seeds']} seeds)</span>"
        to_r = "not reached" if not r["reached"] else _fmt(r["rounds_to_target"], "int") + partial
        to_mb = "not reached" if not r["reached"] else _fmt(r["mb_to_target"], "mb") + partial
        cells = [_esc(r["label"]), str(r["seeds"]), _fmt((r["rounds"], 0.0, 1), "int") if math.isfinite(r["rounds"])
                 else "&mdash;", _fmt(r["final_acc"], "pct"), _fmt(r["best_acc"], "pct"),
                 _fmt(r["final_local_acc"], "pct"), to_r, to_mb, _fmt(r["final_consensus"], "num"),
                 _fmt(r["spectral_gap"], "num"), _fmt(r["wall_s"], "num")]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</tbody></table></div>"


def _runs_table(runs: Sequence[Run]) -> str:
    head = ["run", "label", "seed", "rounds", "final acc. %", "wall s", "peak MB", "device", "dfl"]
    out = ["<table id='runs'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in runs:
        m = r.manifest
        cells = [r.path.name, r.label, r.seed, r.rounds, f"{100 * r.final('test_acc'):.2f}",
                 f"{r.final('wall_s'):.3g}", m.get("peak_memory_mb", ""), m.get("device", ""), m.get("dfl_version", "")]
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


PX_PER_INCH = 140
"""Display scale of the figures on the page (paper inches -> CSS px): fonts read like 11-12 px."""


def _png_base64(fig: Any, dpi: int = 200) -> tuple[str, int]:
    """(base64 PNG, display width in CSS px) of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii"), round(fig.get_figwidth() * PX_PER_INCH)


def _configs(paths: Sequence[Path], runs: Sequence[Run]) -> list[tuple[str, str]]:
    """(heading, text) of the sweep's source config (if it can still be found) and of the first
    run's resolved config.toml."""
    out = []
    for p in paths:
        src = read_sweep(p).get("config")
        if isinstance(src, str) and src:
            cand = next((c for c in (p / src, Path(src), p / Path(src).name) if c.is_file()), None)
            if cand is not None:
                out.append((f"Sweep source config {cand} (as on disk now)", cand.read_text(errors="replace")))
            else:
                out.append((f"Sweep source config {src}", "(not found from here)"))
            break
    first = runs[0].path / "config.toml"
    if first.is_file():
        out.append((f"Resolved config of the first run, {first}", first.read_text(errors="replace")))
    return out or [("Config", "(no config.toml found)")]


FIGURE_CAPTIONS = {
    "consensus": "Consensus distance vs round (log scale), one panel per topology.",
    "accuracy": "Test accuracy of the averaged model and mean local test accuracy vs round.",
    "comm": "Test accuracy of the averaged model vs cumulative MB sent per client.",
    "gap": "Final test accuracy and final consensus distance vs effective spectral gap, one point per group.",
    "flatness": "Flatness of the averaged model vs round.",
}


def build_report(paths: Sequence[str | Path], target: Optional[float] = None, title: Optional[str] = None,
                 on_note: Optional[Callable[[str], None]] = None) -> str:
    """The HTML page for the runs under `paths` (run, sweep or parent directories).

    Args:
        paths: directories as `load_runs` takes them.
        target: target test accuracy in (0, 1]; default 90% of the best final accuracy.
        title: page title (default: the first directory's name).
        on_note: called with each note (skipped sweep members, figures that could not be drawn).
    Returns:
        the page as a string.
    """
    from . import plots

    note = on_note or (lambda msg: None)
    notes: list[str] = []

    def add_note(msg: str) -> None:
        notes.append(msg)
        note(msg)

    paths = [Path(p) for p in paths]
    runs = load_runs(paths, on_skip=add_note)
    groups = group_runs(runs)
    if target is None:
        target = default_target(runs)
        target_how = f"{100 * DEFAULT_TARGET_FRACTION:.0f}% of the best final test accuracy"
    else:
        best = max((r.final("test_acc") for r in runs if r.has("test_acc")), default=math.nan)
        if not 0 < target <= 1:
            hint = f"; give a fraction, e.g. {target / 100:g}" if target > 1 and (math.isnan(best) or best <= 1) else ""
            raise DflError(f"target accuracy must be in (0, 1], got {target:g}{hint}")
        target_how = "given"
    figures = []
    names = [n for n in plots.FIGURES if n != "flatness" or any(r.has(k) for r in runs for k in plots.FLATNESS_KEYS)]
    for name in names:
        try:
            fig = plots.FIGURES[name](groups)
        except DflError as exc:
            add_note(f"figure {name!r} not drawn: {exc}")
            continue
        figures.append((name, *_png_base64(fig)))
    title = title or f"dfl report: {paths[0].resolve().name}"
    sweep = next((read_sweep(p) for p in paths if read_sweep(p)), {})
    axes = sweep.get("axes") if isinstance(sweep.get("axes"), dict) else {}

    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='muted'>{len(runs)} runs in {len(groups)} groups (runs that differ only by seed) from "
        f"{_esc(', '.join(str(p) for p in paths))}; written by dfl {_esc(__version__)}.</p>",
    ]
    if notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    parts += [
        "<h2>Summary</h2>",
        f"<p>Target test accuracy {100 * target:.2f}% ({_esc(target_how)}). Accuracies are of the averaged model "
        "unless marked local; mean &plusmn; sample std over seeds; MB are cumulative per client.</p>",
        _table(summarize(groups, target), target),
        "<h2>Figures</h2>",
    ]
    for name, b64, width in figures:
        cap = FIGURE_CAPTIONS.get(name, name)
        parts.append(f"<figure id='fig-{_esc(name)}'><img alt='{_esc(cap)}' style='width:{width}px' "
                     f"src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{_esc(cap)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2>")
    if axes:
        parts.append("<p>Sweep axes:</p><ul>" + "".join(
            f"<li><code>{_esc(k)}</code>: {_esc(', '.join(map(str, v)) if isinstance(v, list) else v)}</li>"
            for k, v in axes.items()) + "</ul>")
    for i, (heading, text) in enumerate(_configs(paths, runs)):
        parts += [f"<p class='muted'>{_esc(heading)}</p>", f"<pre id='config{i or ''}'>{_esc(text)}</pre>"]
    parts += ["<details><summary>Runs</summary>", _runs_table(runs), "</details>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(page: str, path: str | Path) -> Path:
    """Write the page atomically (a temporary file, then rename); .html or .htm only."""
    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise DflError(f"{p}: a report is an HTML page; use a file name ending in .html")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(p)
    return p
