"""Consistency curves and comparisons of runs, as matplotlib Figures sized for a paper.

Every figure takes a list of runs (see dfl.rundir) and groups them by everything but the seed:
a group with several seeds is drawn as its mean with a shaded min-max band. One colour per
algorithm in every figure (Paul Tol's colour-blind-safe "muted" palette, black for the pooled
upper bound); line style tells the gossip steps Q apart, marker the topology.

    consensus   consensus distance vs round, log y, one panel per topology
    accuracy    test accuracy of the averaged model | mean local test accuracy, vs round
    comm        test accuracy vs cumulative MB sent (log x when it spans a decade)
    gap         final accuracy | final consensus vs effective spectral gap 1 - (1 - gap)^Q
    flatness    hessian_max_eig / hessian_trace / sharpness vs round (only when recorded)

Figures are built as `matplotlib.figure.Figure` objects without pyplot, so no global backend
is touched; `save` picks the format by extension. Single-panel figures are 3.3 in wide (one
column), multi-panel ones 6.9 in (two columns), fonts 7-8 pt.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from .config import ALGO_LABELS
from .errors import DflError
from .rundir import Group, Run, group_runs, require

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ALGO_COLORS = {
    "dfedsam": "#CC6677",      # rose
    "dfedsam_mgs": "#882255",  # wine
    "dfedavg": "#332288",      # indigo
    "dfedavgm": "#88CCEE",     # cyan
    "dpsgd": "#AA4499",        # purple
    "fedavg": "#117733",       # green
    "fedsam": "#44AA99",       # teal
    "mofedsam": "#999933",     # olive
    "pooled": "#000000",       # black: the upper bound
    "dfedsam+tram": "#DDCC77",  # sand
    "dfedsam+asam": "#661100",  # brown
}
"""Fixed colour of each known algorithm, the same in every figure."""
_EXTRA_COLORS = ("#BBBBBB", "#777777", "#6699CC")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FORMATS = ("png", "pdf", "svg")
SINGLE_W, DOUBLE_W, PANEL_H = 3.3, 6.9, 2.3
FONT = 8
FLATNESS_KEYS = ("hessian_max_eig", "hessian_trace", "sharpness")
METRIC_LABELS = {
    "round": "round",
    "test_acc": "test acc. (mean model)",
    "local_test_acc": "local test acc. (mean)",
    "consensus": r"consensus distance $\Xi$",
    "comm_mb": "MB sent per client (cumulative)",
    "spectral_gap": "spectral gap",
    "effective_gap": r"effective gap $1-(1-\gamma)^Q$",
    "hessian_max_eig": r"Hessian $\lambda_{max}$",
    "hessian_trace": "Hessian trace",
    "sharpness": "sharpness",
    "wall_s": "wall time (s)",
}


def algo_color(name: str) -> str:
    """The colour of an algorithm; unknown names get a grey/sand fallback by hash."""
    if name in ALGO_COLORS:
        return ALGO_COLORS[name]
    return _EXTRA_COLORS[sum(name.encode()) % len(_EXTRA_COLORS)]


class _Styles:
    """Line style per gossip-step count Q and marker per topology, over the groups drawn."""

    def __init__(self, groups: Sequence[Group]):
        self.qs = sorted({g.gossip_steps for g in groups})
        self.topos = list(dict.fromkeys(g.topology for g in groups))

    def line(self, g: Group, markers: bool = True) -> dict[str, Any]:
        """Colour by algorithm, line style by Q; a sparse marker by topology when there are several."""
        q_index = self.qs.index(g.gossip_steps)
        style = {"color": algo_color(g.method), "linestyle": LINESTYLES[q_index % len(LINESTYLES)]}
        if markers and len(self.topos) > 1:
            style.update(marker=self.marker(g), markersize=3)
        return style

    def marker(self, g: Group) -> str:
        return MARKERS[self.topos.index(g.topology) % len(MARKERS)]


def _figure(ncols: int = 1, nrows: int = 1, sharey: bool = False, sharex: bool = False,
            width: float | None = None) -> tuple["Figure", np.ndarray]:
    from matplotlib.figure import Figure

    w = width or (SINGLE_W if ncols == 1 else DOUBLE_W)
    fig = Figure(figsize=(w, PANEL_H * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    for ax in axes.flat:
        ax.tick_params(which="both", labelsize=FONT - 1, length=2.5, width=0.6)
        ax.grid(True, which="major", lw=0.4, alpha=0.4)
        for spine in ax.spines.values():
            spine.set_linewidth(0.6)
    return fig, axes


def _log_x(ax: "Axes") -> None:
    """Log x axis with plain numbers (0.05, 1, 10) at the decades and no minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _label(ax: "Axes", x: str | None = None, y: str | None = None, title: str | None = None) -> None:
    if x:
        ax.set_xlabel(METRIC_LABELS.get(x, x), fontsize=FONT)
    if x == "round":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.set_ylabel(METRIC_LABELS.get(y, y), fontsize=FONT)
    if title:
        ax.set_title(title, fontsize=FONT)


def _curve(ax: "Axes", g: Group, key: str, style: dict[str, Any], x: str = "round", positive: bool = False) -> None:
    """Mean line of `key` vs `x` with its min-max band over seeds; on log axes drop y <= 0."""
    xs, mean, lo, hi = g.series(key, x)
    if positive:
        keep = lo > 0
        xs, mean, lo, hi = xs[keep], mean[keep], lo[keep], hi[keep]
    if "marker" in style:
        style = {**style, "markevery": max(1, len(xs) // 6)}
    (line,) = ax.plot(xs, mean, label=g.label, lw=1.1, **style)
    line.set_gid(g.key)
    if len(g.runs) > 1:
        band = ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.2, lw=0, label=f"_band {g.label}")
        band.set_gid(g.key)


def _legend(fig: "Figure", groups: Sequence[Group], styles: _Styles, marker: bool = False,
            line_markers: bool = True, factored: bool = False) -> None:
    """Figure legend below the panels: one entry per group, or factored (colour = algorithm,
    line style = Q, marker = topology) when there are more than 8 groups or `factored`."""
    from matplotlib.lines import Line2D

    if len(groups) <= 8 and not factored:
        handles = [Line2D([], [], color=algo_color(g.method), marker=styles.marker(g), markersize=4,
                          linestyle="none") if marker else Line2D([], [], lw=1.1, **styles.line(g, line_markers))
                   for g in groups]
        labels = [g.label for g in groups]
    else:  # colour = algorithm, then line style = Q (or marker = topology)
        algos = list(dict.fromkeys(g.method for g in groups))
        handles = [Line2D([], [], color=algo_color(a), lw=1.5) for a in algos]
        labels = [ALGO_LABELS.get(a, a) for a in algos]
        topos = list(dict.fromkeys(g.topology for g in groups))
        if marker or (line_markers and len(styles.topos) > 1):
            handles += [Line2D([], [], color="0.3", marker=styles.marker(next(g for g in groups if g.topology == t)),
                               linestyle="none") for t in topos]
            labels += topos
        if not marker:
            qs = sorted({g.gossip_steps for g in groups})
            handles += [Line2D([], [], color="0.3", lw=1.1, linestyle=LINESTYLES[styles.qs.index(q) % len(LINESTYLES)])
                        for q in qs]
            labels += [f"Q={q}" for q in qs]
    ncol = 2 if fig.get_figwidth() < 4 else 4
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(labels)),
               fontsize=FONT - 1, frameon=False, handlelength=2.2, columnspacing=1.0)


def _groups(runs: Iterable[Run] | Sequence[Group]) -> list[Group]:
    items = list(runs)
    if not items:
        raise DflError("no runs to plot")
    return items if isinstance(items[0], Group) else group_runs(items)


def _runs(groups: Sequence[Group]) -> list[Run]:
    return [r for g in groups for r in g.runs]


# ---------------------------------------------------------------------------- figures


def plot_consensus(runs: Iterable[Run] | Sequence[Group]) -> "Figure":
    """Consensus distance vs round on a log y axis: one panel per topology (shared y),
    colour = algorithm, line style = Q. Zero consensus (server averaging) cannot be shown on
    a log axis and is dropped."""
    groups = _groups(runs)
    require(_runs(groups), "consensus")
    styles = _Styles(groups)
    groups = [g for g in groups if (g.series("consensus")[2] > 0).any()]
    if not groups:
        raise DflError("every run has consensus distance 0 (server averaging): nothing to draw on a log axis")
    topos = list(dict.fromkeys(g.topology for g in groups))
    ncols = min(len(topos), 3)
    nrows = math.ceil(len(topos) / ncols)
    fig, axes = _figure(ncols, nrows, sharey=True)
    for i, (ax, topo) in enumerate(zip(axes.flat, topos)):
        ax.set_yscale("log")
        for g in groups:
            if g.topology == topo:
                _curve(ax, g, "consensus", styles.line(g, markers=False), positive=True)
        _label(ax, "round", "consensus" if i % ncols == 0 else None, topo if len(topos) > 1 else None)
    for ax in list(axes.flat)[len(topos):]:
        ax.set_visible(False)
    _legend(fig, groups, styles, line_markers=False, factored=len(topos) > 1)
    return fig


def plot_accuracy(runs: Iterable[Run] | Sequence[Group]) -> "Figure":
    """Test accuracy of the averaged model (left) and mean local test accuracy (right) vs round."""
    groups = _groups(runs)
    require(_runs(groups), ("test_acc", "local_test_acc"))
    styles = _Styles(groups)
    fig, axes = _figure(2, sharey=True)
    for ax, key in zip(axes.flat, ("test_acc", "local_test_acc")):
        for g in groups:
            _curve(ax, g, key, styles.line(g))
        _label(ax, "round", key)
    _legend(fig, groups, styles)
    return fig


def plot_accuracy_vs_comm(runs: Iterable[Run] | Sequence[Group]) -> "Figure":
    """Test accuracy of the averaged model vs cumulative MB sent per client."""
    groups = _groups(runs)
    require(_runs(groups), ("test_acc", "comm_mb"))
    styles = _Styles(groups)
    fig, axes = _figure(1)
    ax = axes[0, 0]
    for g in groups:
        _curve(ax, g, "test_acc", styles.line(g), x="comm_mb")
    mbs = [r.final("comm_mb") for r in _runs(groups)]
    first = [float(np.nanmin(np.where(r.metrics["comm_mb"] > 0, r.metrics["comm_mb"], np.nan)))
             for r in _runs(groups) if (r.metrics["comm_mb"] > 0).any()]
    if first and min(first) > 0 and max(mbs) / min(first) >= 10:
        _log_x(ax)
    _label(ax, "comm_mb", "test_acc")
    _legend(fig, groups, styles)
    return fig


def plot_gap(runs: Iterable[Run] | Sequence[Group], gap: str = "effective_gap") -> "Figure":
    """Final test accuracy (left) and final consensus (right, log y) vs the spectral gap.

    One point per group (the mean over seeds, with min-max error bars when there are several);
    colour = algorithm, marker = topology. `gap` is the x metric: "effective_gap" (default,
    1 - (1 - gap)^Q, so different Q spread out) or "spectral_gap". Groups without a finite gap
    (server averaging) are left out. Log x when the gaps span more than a decade.
    """
    groups = _groups(runs)
    require(_runs(groups), ("test_acc", "consensus"))
    styles = _Styles(groups)
    fig, axes = _figure(2, sharex=True)
    xs_all = []
    for ax, key in zip(axes.flat, ("test_acc", "consensus")):
        for g in groups:
            x = g.finals(gap)
            y = g.finals(key)
            if not (np.isfinite(x).all() and np.isfinite(y).all()) or (key == "consensus" and (y <= 0).any()):
                continue
            xs_all.append(x.mean())
            color = algo_color(g.method)
            if len(g.runs) > 1:
                ax.errorbar([x.mean()], [y.mean()], yerr=[[y.mean() - y.min()], [y.max() - y.mean()]],
                            fmt="none", ecolor=color, elinewidth=0.8, capsize=1.5)
            pts = ax.scatter([x.mean()], [y.mean()], color=color, marker=styles.marker(g), s=16,
                             label=g.label, zorder=3, edgecolors="none")
            pts.set_gid(g.key)
        if key == "consensus":
            ax.set_yscale("log")
        _label(ax, gap, key)
    pos = [v for v in xs_all if v > 0]
    if pos and max(pos) / min(pos) > 10:
        for ax in axes.flat:
            _log_x(ax)
    if not xs_all:
        for ax in axes.flat:
            ax.text(0.5, 0.5, f"no run has a finite {gap}", ha="center", va="center", transform=ax.transAxes,
                    fontsize=FONT)
    drawn = {c.get_gid() for c in axes[0, 0].collections} | {c.get_gid() for c in axes[0, 1].collections}
    _legend(fig, [g for g in groups if g.key in drawn] or groups, styles, marker=True)
    return fig


def plot_flatness(runs: Iterable[Run] | Sequence[Group], keys: Sequence[str] = FLATNESS_KEYS) -> "Figure":
    """Flatness vs round: one panel per recorded key among hessian_max_eig, hessian_trace,
    sharpness. Only the groups whose runs recorded the key are drawn in its panel; a DflError
    when no run recorded any of them."""
    groups = _groups(runs)
    present = [k for k in keys if any(r.has(k) for r in _runs(groups))]
    if not present:
        raise DflError(f"no run recorded a flatness metric ({', '.join(keys)}); "
                       "set metrics.sharpness_every in the config")
    styles = _Styles(groups)
    fig, axes = _figure(len(present))
    for ax, key in zip(axes.flat, present):
        for g in groups:
            if all(r.has(key) for r in g.runs):
                _curve(ax, g, key, styles.line(g))
        _label(ax, "round", key)
    _legend(fig, [g for g in groups if any(all(r.has(k) for r in g.runs) for k in present)], styles)
    return fig


FIGURES: dict[str, Callable[..., "Figure"]] = {
    "consensus": plot_consensus,
    "accuracy": plot_accuracy,
    "comm": plot_accuracy_vs_comm,
    "gap": plot_gap,
    "flatness": plot_flatness,
}
"""Figure name -> function, in the order `dfl plot` and `dfl report` draw them."""


def make_figures(runs: Iterable[Run] | Sequence[Group], names: Sequence[str] | None = None) -> dict[str, "Figure"]:
    """Draw the named figures (default: all; flatness only when some run recorded it)."""
    groups = _groups(runs)
    if names is None:
        names = [n for n in FIGURES if n != "flatness" or any(r.has(k) for r in _runs(groups) for k in FLATNESS_KEYS)]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise DflError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    return {name: FIGURES[name](groups) for name in names}


def save(fig: "Figure", path: str | Path, dpi: int = 300) -> Path:
    """Write a figure as png, pdf or svg (by the file's extension); parent dirs are created.

    PDF and SVG are written without a creation date, so equal figures give equal files.
    """
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DflError(f"{p}: cannot write a figure as {p.suffix or 'a file without extension'!r}; "
                       f"use one of {', '.join('.' + f for f in FORMATS)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[fmt]
    fig.savefig(p, format=fmt, dpi=dpi, metadata=metadata)
    return p
