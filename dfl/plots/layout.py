"""Layout shared by every figure: the canvas and its panels, axis labels, log-axis tick labels,
and `finish` (title above, legend below in as many columns as fit, the canvas grown to hold them).

Figures are `matplotlib.figure.Figure` objects drawn without pyplot, so no global backend is touched.
"""
from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import numpy as np

from ..errors import DflError
from ..rundir.groups import Group, group_runs
from ..rundir.read import Run
from .style import METRIC_LABELS, Style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def as_groups(runs: Iterable[Run] | Sequence[Group]) -> list[Group]:
    """Runs grouped by everything but the seed (groups are passed through); a DflError for none."""
    items = list(runs)
    if not items:
        raise DflError("no runs to plot")
    return items if isinstance(items[0], Group) else group_runs(items)


def runs_of(groups: Sequence[Group]) -> list[Run]:
    """Every run of the groups."""
    return [r for g in groups for r in g.runs]


def new_figure(st: Style, panels: int = 1, sharey: bool = False, sharex: bool = False) -> tuple["Figure", np.ndarray]:
    """A Figure with `panels` axes in rows of at most st.max_cols (the others hidden), styled for st."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(panels, st.max_cols)
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(st.width if ncols == 1 else st.wide, st.panel_h * nrows + 0.1 * st.font),
                 layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure legends and titles with
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    for ax in axes.flat:
        ax.tick_params(which="both", labelsize=st.font - 1, length=2.5 * st.lw + 0.5, width=0.6)
        ax.grid(True, which="major", lw=0.4, alpha=0.4)
        for spine in ax.spines.values():
            spine.set_linewidth(0.6)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    return fig, axes


def _text_width(renderer: Any, text: str, size: float) -> float:
    """Width in pixels of the widest line of `text` at font size `size`."""
    from matplotlib.font_manager import FontProperties

    fp = FontProperties(size=size)
    return max(renderer.get_text_width_height_descent(line, fp, ismath="$" in line)[0]
               for line in text.split("\n"))


def _wrap(renderer: Any, text: str, size: float, width_px: float) -> str:
    """Break `text` into lines no wider than width_px (measured with the figure's renderer)."""
    if _text_width(renderer, text, size) <= width_px:
        return text
    for chars in range(len(text) - 1, 5, -1):
        wrapped = textwrap.fill(text, chars, break_on_hyphens=False)
        if _text_width(renderer, wrapped, size) <= width_px:
            return wrapped
    return textwrap.fill(text, 6)


def finish(fig: "Figure", st: Style, handles: list, labels: list[str], title: Optional[str]) -> "Figure":
    """Title above, legend below the axes in as many columns as fit the width (labels wrapped when
    even one column does not), and the canvas grown by their height so the axes keep theirs."""
    _plain_log_labels(fig)
    renderer = fig.canvas.get_renderer()
    avail = 0.96 * fig.bbox.width
    fig.get_layout_engine().execute(fig)
    for ax in fig.axes:  # axis labels no wider than their axes (paper panels are narrow)
        box = ax.get_position()
        w, h = box.width * fig.bbox.width, box.height * fig.bbox.height
        for text, room in ((ax.xaxis.label, w), (ax.yaxis.label, h)):
            if text.get_text():
                text.set_text(_wrap(renderer, text.get_text(), text.get_fontsize(), room))
    extra = 0.0
    if title:
        text = fig.suptitle(_wrap(renderer, title, st.font - 1, avail), fontsize=st.font - 1, color="0.25")
        extra += text.get_window_extent(renderer).height / fig.dpi
    if labels:
        kw = dict(loc="outside lower center", fontsize=st.font - 1, frameon=False, handlelength=2.4,
                  columnspacing=1.2, handletextpad=0.5)
        leg = None
        for ncol in range(min(len(labels), 6), 0, -1):
            leg = fig.legend(handles, labels, ncol=ncol, **kw)
            if leg.get_window_extent(renderer).width <= avail:
                break
            leg.remove()
            leg = None
        if leg is None:  # one column is still too wide: wrap the labels
            handle_px = (kw["handlelength"] + kw["handletextpad"] + 1) * (st.font - 1) * fig.dpi / 72
            leg = fig.legend(handles, [_wrap(renderer, lab, st.font - 1, avail - handle_px) for lab in labels],
                             ncol=1, **kw)
        extra += leg.get_window_extent(renderer).height / fig.dpi + 0.02 * st.font
    fig.set_figheight(fig.get_figheight() + extra)
    return fig


def _plain_log_labels(fig: "Figure") -> None:
    """Log axes labelled with plain numbers (0.05, 1, 10) at the decades, and at 2x and 5x in
    between when the axis spans less than two decades (else one label would be all there is)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def plain(v: float, _: Any) -> str:
        return f"{v:g}"

    def mid(v: float, _: Any) -> str:
        return f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6) in (2, 5) else ""

    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log" or min(lim) <= 0:
                continue
            axis.set_major_formatter(FuncFormatter(plain))
            axis.set_minor_formatter(FuncFormatter(mid) if math.log10(max(lim) / min(lim)) < 2 else NullFormatter())


def label_axes(ax: "Axes", st: Style, x: str | None = None, y: str | None = None, title: str | None = None) -> None:
    """Axis labels from METRIC_LABELS (integer ticks on a round axis) and a panel title."""
    if x:
        ax.set_xlabel(METRIC_LABELS.get(x, x), fontsize=st.font)
    if x == "round":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    if y:
        ax.set_ylabel(METRIC_LABELS.get(y, y), fontsize=st.font)
    if title:
        ax.set_title(title, fontsize=st.font)
