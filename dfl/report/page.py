"""The report as one self-contained HTML page: summary table, figures, configuration.

The page has no external resources: CSS inline, figures as base64 PNG <img>. Everything from
the files (labels, config text, paths) is HTML-escaped. The summary table comes first, each
variant beside a swatch of its colour in the figures; then every figure of dfl.plots in the
screen style, sized to the page, with a caption saying what to look for and what the runs share.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .. import __version__
from ..errors import DflError
from ..files import atomic_write
from ..plots.captions import FIGURE_CAPTIONS
from ..rundir.groups import Group
from ..rundir.read import Run, read_sweep
from .summary import Summary, summary
from .text import cells, has_sim_time, header

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


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[dict[str, Any]], target: float, colors: Optional[dict[str, str]] = None) -> str:
    """The summary table as HTML; `colors` (label -> colour) puts each variant's figure colour beside it."""
    out = ["<div class='scroll'><table id='summary'><thead><tr>"
           + "".join(f"<th>{_esc(h)}</th>" for h in header(target, has_sim_time(rows))) + "</tr></thead><tbody>"]
    for r in rows:
        attr = " class='baseline'" if r["baseline"] else ""
        row = [_esc(c) for c in cells(r)]
        if colors and r["label"] in colors:
            row[0] = f"<span class='sw' style='background:{_esc(colors[r['label']])}'></span>{row[0]}"
        out.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
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
    notes: list[str] = []

    def add_note(msg: str) -> None:
        notes.append(msg)
        if on_note:
            on_note(msg)

    paths = [Path(p) for p in paths]
    summ = summary(paths, target, baseline, add_note)
    figures = _figures(summ.groups, add_note)
    title = title or f"dfl report: {paths[0].resolve().name}"
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='muted'>{len(summ.runs)} runs in {len(summ.groups)} groups (runs that differ only by seed) from "
        f"{_esc(', '.join(str(p) for p in paths))}; written by dfl {_esc(__version__)}.</p>",
    ]
    if notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    parts += _summary_and_figures(summ, figures)
    parts += _configuration(paths, summ.runs)
    parts += ["<details><summary>Runs</summary>", _runs_table(summ.runs), "</details>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _figures(groups: Sequence[Group], add_note: Callable[[str], None]) -> list[tuple[str, str, int]]:
    """(name, base64 PNG, display width) of each default figure in the screen style without a
    title (the caption says what the runs share); a figure that cannot be drawn is a note."""
    from .. import plots

    figures = []
    for name in plots.default_figures(groups):
        try:
            fig = plots.FIGURES[name](groups, style="screen", title=False)
        except DflError as exc:
            add_note(f"figure {name!r} not drawn: {exc}")
            continue
        figures.append((name, *_png_base64(fig)))
    return figures


def _summary_and_figures(summ: Summary, figures: list[tuple[str, str, int]]) -> list[str]:
    """The Summary section (table with colour swatches, its note) and the Figures section."""
    from .. import plots

    look = plots.Look(summ.groups)
    parts = [
        "<h2>Summary</h2>",
        _table(summ.rows, summ.target, {g.label: look.color(g) for g in summ.groups}),
        f"<p class='tablenote'>{_esc(summ.note)}</p>",
        "<h2>Figures</h2>",
    ]
    for name, b64, width in figures:
        cap = FIGURE_CAPTIONS.get(name, name) + f" All runs: {look.shared}."
        parts.append(f"<figure id='fig-{_esc(name)}'><img alt='{_esc(cap)}' style='width:{width}px' "
                     f"src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{_esc(cap)}</figcaption></figure>")
    return parts


def _configuration(paths: Sequence[Path], runs: Sequence[Run]) -> list[str]:
    """The Configuration section: the sweep's axes (if any) and the config texts of `_configs`."""
    sweep = next((read_sweep(p) for p in paths if read_sweep(p)), {})
    axes = sweep.get("axes") if isinstance(sweep.get("axes"), dict) else {}
    parts = ["<h2>Configuration</h2>"]
    if axes:
        parts.append("<p>Sweep axes:</p><ul>" + "".join(
            f"<li><code>{_esc(k)}</code>: {_esc(', '.join(map(str, v)) if isinstance(v, list) else v)}</li>"
            for k, v in axes.items()) + "</ul>")
    for i, (heading, text) in enumerate(_configs(paths, runs)):
        parts += [f"<p class='muted'>{_esc(heading)}</p>", f"<pre id='config{i or ''}'>{_esc(text)}</pre>"]
    return parts


def write_report(page: str, path: str | Path) -> Path:
    """Write the page atomically (dfl.files.atomic_write); .html or .htm only."""
    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise DflError(f"{p}: a report is an HTML page; use a file name ending in .html")
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, lambda fh: fh.write(page.encode("utf-8")))
    return p
