"""One self-contained HTML page for a sweep (or any set of runs): summary table, figures, config.

The page has no external resources: CSS inline, figures as base64 PNG <img>. Everything from
the files (labels, config text, paths) is HTML-escaped. The summary table comes first, each
variant beside a swatch of its colour in the figures; then every figure of dfl.plots in the
screen style, sized to the page, with a caption saying what to look for and what the runs share.

    html = build_report(["runs/sweep1"], target=0.8)
    write_report(html, "runs/sweep1/report.html")

Summary table, one row per variant (a group of runs whose resolved configs are equal but for
the seed): n, final and best test accuracy of the averaged model (mean +- sample std over the n
seeds; n = 1 shows no std), the difference of the mean final accuracy to a baseline variant
(default: the first DFedAvg, else FedAvg, else the first variant; +- the standard error of the
difference when both have n > 1), final mean local accuracy, rounds and cumulative MB to first
reach the target accuracy (default: 90% of the best final accuracy of any run), simulated
seconds to reach it (only when runs recorded sim_time_s, [system]), final consensus distance,
spectral gap, wall time. The same table as Markdown: `build_markdown`.
"""
from __future__ import annotations

import base64
import difflib
import html
import io
import math
import os
from dataclasses import dataclass
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
tr.baseline td{font-weight:600}.tablenote{font-size:13px;color:#555;max-width:60em}
.sw{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;vertical-align:-.05em}
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


# ---------------------------------------------------------------------------- tables


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


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


def _header(target: float, timed: bool = False) -> list[str]:
    return ["variant", "n", "rounds", "final acc. %", "\u0394 final acc. vs baseline (pp)", "best acc. %",
            "final local acc. %", f"rounds to {100 * target:.1f}%", f"MB to {100 * target:.1f}%",
            *([f"sim. s to {100 * target:.1f}%"] if timed else []),
            "final consensus", "spectral gap", "wall s"]


def _timed(rows: list[dict[str, Any]]) -> bool:
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


def _cells(r: dict[str, Any]) -> list[str]:
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


def table_note(baseline: str, target: float, target_how: str) -> str:
    """The sentence under the summary table: what the numbers are, which variant is the baseline."""
    return (f"n: seeds per variant (runs whose configs differ only by seed); mean \u00b1 sample std over "
            f"the n seeds (no std for n = 1). Baseline: {baseline}; \u0394 is the difference of the mean "
            f"final test accuracy to the baseline's, in percentage points (\u00b1 its standard error when "
            f"both have n > 1). Target test accuracy {100 * target:.2f}% ({target_how}). Accuracies are "
            f"of the averaged model unless marked local; MB are cumulative, summed over all clients; the spectral gap "
            f"of a time-varying graph is that of one period's product of mixing matrices.")


def _table(rows: list[dict[str, Any]], target: float, colors: Optional[dict[str, str]] = None) -> str:
    """The summary table as HTML; `colors` (label -> colour) puts each variant's figure colour beside it."""
    out = ["<div class='scroll'><table id='summary'><thead><tr>"
           + "".join(f"<th>{_esc(h)}</th>" for h in _header(target, _timed(rows))) + "</tr></thead><tbody>"]
    for r in rows:
        attr = " class='baseline'" if r["baseline"] else ""
        cells = [_esc(c) for c in _cells(r)]
        if colors and r["label"] in colors:
            cells[0] = f"<span class='sw' style='background:{_esc(colors[r['label']])}'></span>{cells[0]}"
        out.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</tbody></table></div>"


def markdown_table(rows: list[dict[str, Any]], target: float) -> str:
    """The summary table as a GitHub Markdown table (numbers right-aligned, '|' escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    head = _header(target, _timed(rows))
    out = [line(head), "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    return "\n".join(out + [line(_cells(r)) for r in rows])


def _runs_table(runs: Sequence[Run]) -> str:
    head = ["run", "label", "seed", "rounds", "final acc. %", "wall s", "peak MB", "device", "dfl"]
    out = ["<table id='runs'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in runs:
        m = r.manifest
        cells = [r.path.name, r.label, r.seed, r.rounds, f"{100 * r.final('test_acc'):.2f}",
                 f"{r.final('wall_s'):.3g}", m.get("peak_memory_mb", ""), m.get("device", ""), m.get("dfl_version", "")]
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


PX_PER_INCH = 100
"""Display scale of the figures on the page (inches of the screen style -> CSS px): an 11 pt axis
label reads like 15 px, a two-panel figure fills the page's width."""


def _png_base64(fig: Any, dpi: int = 150) -> tuple[str, int]:
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
    "consensus": "Consensus distance \u039e = (1/n) \u03a3 \u2016x_i \u2212 x\u0304\u2016\u00b2 after each round's "
                 "gossip, log scale, one panel per topology. Dashed grey: what gossip alone would give, \u039e "
                 "shrinking by (1 \u2212 \u03b3)^(2Q) per round (\u03b3 the spectral gap of W; for a time-varying "
                 "graph, its period's gap), from the highest first value; none where gossip alone averages exactly "
                 "(complete graph, one period of one-peer exponential). Look for where a curve levels off above "
                 "its dashed slope: that floor is the drift of local training, which more gossip steps Q or a "
                 "better-connected graph lowers.",
    "accuracy": "Test accuracy of the averaged model x\u0304 (left) and mean test accuracy of the clients' own "
                "models (right) per round. Look for the distance between the panels: local models far below the "
                "averaged one mean clients that disagree (high consensus distance); the last rounds are the "
                "table's final accuracy.",
    "comm": "Test accuracy of the averaged model vs cumulative MB sent by all clients (gossip: each client sends Q \u00d7 degree "
            "\u00d7 model size per round). Look to the left: a curve that reaches an accuracy with fewer MB is "
            "the cheaper variant; more gossip steps Q buy accuracy per round at a multiple of the traffic.",
    "gap": "Final test accuracy (left) and final consensus distance (right) vs the effective spectral gap "
           "1 \u2212 (1 \u2212 \u03b3)^Q, one point per variant (bars: min-max over seeds). Look for the trend: "
           "a larger gap should lower the consensus distance and, on non-iid data, raise accuracy; a variant off "
           "the trend gains or loses more than mixing explains.",
    "flatness": "Flatness of the averaged model per round (largest Hessian eigenvalue, Hessian trace, "
                "sharpness). Lower is flatter: SAM-family local optimizers should sit below SGD.",
    "time": "Test accuracy of the averaged model (left) and consensus distance (right, log scale) vs simulated "
            "wall-clock time of the system model ([system]: device speeds, link bandwidths and latencies; each "
            "round waits for its slowest client and its slowest exchange). Look to the left: the variant that "
            "reaches an accuracy first wins in time, which need not be the one that wins in rounds.",
}
"""What each figure shows and what to look for (the report's captions)."""


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


def build_markdown(paths: Sequence[str | Path], target: Optional[float] = None, baseline: Optional[str] = None,
                   on_note: Optional[Callable[[str], None]] = None) -> str:
    """The summary table as Markdown followed by its note (what n, +- and the baseline are)."""
    s = summary(paths, target, baseline, on_note)
    return markdown_table(s.rows, s.target) + "\n\n" + s.note + "\n"


def build_report(paths: Sequence[str | Path], target: Optional[float] = None, title: Optional[str] = None,
                 on_note: Optional[Callable[[str], None]] = None, baseline: Optional[str] = None) -> str:
    """The HTML page for the runs under `paths` (run, sweep or parent directories).

    Args:
        paths: directories as `load_runs` takes them.
        target: target test accuracy in (0, 1]; default 90% of the best final accuracy.
        title: page title (default: the first directory's name).
        on_note: called with each note (skipped sweep members, figures that could not be drawn).
        baseline: label of the baseline variant of the summary table (default: see `pick_baseline`).
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
    summ = summary(paths, target, baseline, add_note)
    runs, groups = summ.runs, summ.groups
    figures = []
    look = plots.Look(groups)
    for name in plots.default_figures(groups):
        try:
            fig = plots.FIGURES[name](groups, style="screen", title=False)
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
        _table(summ.rows, summ.target, {g.label: look.color(g) for g in groups}),
        f"<p class='tablenote'>{_esc(summ.note)}</p>",
        "<h2>Figures</h2>",
    ]
    for name, b64, width in figures:
        cap = FIGURE_CAPTIONS.get(name, name) + f" All runs: {look.shared}."
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
