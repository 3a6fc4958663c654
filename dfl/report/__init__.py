"""One self-contained HTML page for a sweep (or any set of runs): summary table, figures, config.

    html = build_report(["runs/sweep1"], target=0.8)
    write_report(html, "runs/sweep1/report.html")
    md = build_markdown(["runs/sweep1"])        # the same summary table as Markdown

    summary.py   the table's numbers, one row per variant (runs that differ only by seed): mean
                 +- sample std over seeds, difference to a baseline variant, rounds / MB /
                 simulated seconds to a target accuracy
    text.py      the table as plain-text cells and as Markdown (`dfl report --markdown`)
    page.py      the HTML page: CSS inline, figures as base64 PNG, everything from the files escaped

The figures' captions (what each shows, what to look for) live beside the figures in
dfl.plots.captions.
"""
from ..plots.captions import FIGURE_CAPTIONS
from .page import PX_PER_INCH, build_report, write_report
from .summary import (DEFAULT_BASELINES, DEFAULT_TARGET_FRACTION, Summary, default_target, pick_baseline,
                      sim_time_to_target, summarize, summary, table_note, time_to_target)
from .text import build_markdown, markdown_table

__all__ = ["DEFAULT_BASELINES", "DEFAULT_TARGET_FRACTION", "FIGURE_CAPTIONS", "PX_PER_INCH", "Summary",
           "build_markdown", "build_report", "default_target", "markdown_table", "pick_baseline",
           "sim_time_to_target", "summarize", "summary", "table_note", "time_to_target", "write_report"]
