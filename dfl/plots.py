"""Consistency curves and comparisons of runs, as matplotlib Figures for a screen or a paper.

Every figure takes a list of runs (see dfl.rundir) and groups them by everything but the seed:
a group with several seeds is drawn as its mean with a shaded min-max band.

    consensus   consensus distance vs round, log y, one panel per topology, with the rate that
                gossip alone would give, (1 - gap)^(2Q) per round, as a dashed grey slope
    accuracy    test accuracy of the averaged model | mean local test accuracy, vs round
    comm        test accuracy vs cumulative MB sent (log x when it spans a decade)
    time        test accuracy | consensus distance vs simulated time sim_time_s ([system];
                only when recorded)
    gap         final accuracy | final consensus vs effective spectral gap 1 - (1 - gap)^Q
                (only when the runs have at least two different gaps)
    flatness    hessian_max_eig / hessian_trace / sharpness vs round (only when recorded)

Labels name only what differs between the variants drawn ("DFedSAM, Q=4"); what they share
goes in the title (dfl.rundir.describe_variants). Colours (`Look`): one per variant; when the
variants form a grid over two settings, colour tells one apart and line style (marker in the
gap figure) the other, and the legend says which. Colours come from all the groups handed to a
figure, so a report's figures agree; an algorithm alone keeps its fixed colour (ALGO_COLORS,
Paul Tol's colour-blind-safe "muted" palette). Legends sit below the axes, in as many columns
as fit the width; the canvas grows to hold them, so nothing is cut at the edges.

Styles: "screen" (default; larger figures and fonts, PNG) and "paper" (3.3 in wide, one
column, 7-8 pt fonts, PDF or SVG). Figures are built as `matplotlib.figure.Figure` objects
without pyplot, so no global backend is touched; `save` picks the format by extension.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .errors import DflError
from .rundir import Group, Run, describe_variants, group_runs, require

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
"""Fixed colour of each known algorithm when the algorithm is what the colours tell apart."""
PALETTE = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499",
           "#661100", "#6699CC", "#EE8866", "#000000", "#BBCC33", "#FFAABB")
"""Colours in order of first appearance for other variants (Tol muted, then Tol light/bright)."""
THEORY_COLOR = "0.35"
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FORMATS = ("png", "pdf", "svg")
FLATNESS_KEYS = ("hessian_max_eig", "hessian_trace", "sharpness")
METRIC_LABELS = {
    "round": "round",
    "test_acc": "test acc. (mean model)",
    "local_test_acc": "local test acc. (mean)",
    "consensus": r"consensus distance $\Xi$",
    "comm_mb": "MB sent by all clients (cumulative)",
    "spectral_gap": "spectral gap",
    "effective_gap": r"effective gap $1-(1-\gamma)^Q$",
    "hessian_max_eig": r"Hessian $\lambda_{max}$",
    "hessian_trace": "Hessian trace",
    "sharpness": "sharpness",
    "wall_s": "wall time (s)",
    "sim_time_s": "simulated time (s)",
}


@dataclass(frozen=True)
class Style:
    """Sizes for one medium: figure widths (in), height per row of panels, fonts (pt), line width."""

    name: str
    width: float      # a single panel
    wide: float       # panels side by side
    panel_h: float
    max_cols: int
    font: float       # axis labels; ticks, legend and title one point smaller
    lw: float
    dpi: int          # PNG resolution
    formats: tuple[str, ...]


STYLES = {
    "screen": Style("screen", width=7.0, wide=11.0, panel_h=3.4, max_cols=3, font=11, lw=1.6, dpi=150,
                    formats=FORMATS),
    "paper": Style("paper", width=3.3, wide=3.3, panel_h=1.75, max_cols=2, font=8, lw=1.0, dpi=600,
                   formats=("pdf", "svg")),
}
"""`dfl plot --style`: "screen" (default) or "paper" (one-column figures, 3.3 in wide, vector)."""


def _style(style: str | Style) -> Style:
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise DflError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    return STYLES[style]


def algo_color(name: str) -> str:
    """The fixed colour of an algorithm (method name, e.g. "dfedsam+asam"); others by hash."""
    return ALGO_COLORS.get(name) or PALETTE[sum(name.encode()) % len(PALETTE)]


# ---------------------------------------------------------------------------- colours and labels


class Look:
    """Colour, line style, marker and label of every group, decided once over all the groups.

    One colour per variant, unless the variants form a full grid over one setting with at most
    4 values and the rest (e.g. algorithm x Q): then colour = the rest, line style = that setting
    (`style_dim`). `labels` are the short labels of dfl.rundir.describe_variants, `shared` what
    all groups have in common.
    """

    def __init__(self, groups: Sequence[Group]):
        self.variants = v = describe_variants(groups)
        self.labels, self.shared = v.labels, v.shared
        full = v.tokens
        self.style_dim = self._grid_dim(groups)
        rest = [d for d in v.dims if d != self.style_dim]
        self._ckey = {g.key: (tuple(full[g.key][d] for d in rest) if self.style_dim else (g.key,)) for g in groups}
        ckeys = list(dict.fromkeys(self._ckey.values()))
        methods = {k: next(g.method for g in groups if self._ckey[g.key] == k) for k in ckeys}
        by_algo = set(rest) <= {"algorithm"} and len(set(methods.values())) == len(ckeys) \
            and all(m in ALGO_COLORS for m in methods.values())
        if by_algo:
            self._colors = {k: ALGO_COLORS[methods[k]] for k in ckeys}
        else:
            pal = list(PALETTE) if len(ckeys) <= len(PALETTE) else _sampled(len(ckeys))
            self._colors = {k: pal[i] for i, k in enumerate(ckeys)}
        self._clabel = {k: ", ".join(t for t in k if t) if self.style_dim else None for k in ckeys}
        self.style_values = v.values(self.style_dim) if self.style_dim else [None]

    def _grid_dim(self, groups: Sequence[Group]) -> Optional[str]:
        v = self.variants
        if len(v.dims) < 2:
            return None
        best = None
        for d in reversed(v.dims):  # later settings first: the algorithm keeps the colours
            vals = set(v.values(d))
            rest = {tuple(t[k] for k in v.dims if k != d) for t in v.tokens.values()}
            pairs = {(tuple(t[k] for k in v.dims if k != d), t[d]) for t in v.tokens.values()}
            if 2 <= len(vals) <= 4 and len(pairs) == len(groups) == len(rest) * len(vals):
                if best is None or len(vals) < len(set(v.values(best))):
                    best = d
        return best

    def color(self, g: Group) -> str:
        return self._colors[self._ckey[g.key]]

    def linestyle(self, g: Group) -> Any:
        if not self.style_dim:
            return "-"
        return LINESTYLES[self.style_values.index(self.variants.tokens[g.key][self.style_dim]) % len(LINESTYLES)]

    def marker(self, g: Group) -> str:
        if not self.style_dim:
            return "o"
        return MARKERS[self.style_values.index(self.variants.tokens[g.key][self.style_dim]) % len(MARKERS)]

    def label(self, g: Group) -> str:
        return self.labels[g.key]

    def legend(self, drawn: Sequence[Group], lw: float, points: bool = False) -> tuple[list, list[str]]:
        """Handles and labels: one per group drawn, or (grid) one per colour then one per line
        style / marker, each named by its setting ("DFedSAM", ..., "Q=1", "Q=4")."""
        from matplotlib.lines import Line2D

        def handle(color: str, ls: Any = "-", marker: str = "o") -> Line2D:
            if points:
                return Line2D([], [], color=color, marker=marker, markersize=4, linestyle="none")
            return Line2D([], [], color=color, lw=lw, linestyle=ls)

        if not self.style_dim:
            return [handle(self.color(g), "-", "o") for g in drawn], [self.label(g) for g in drawn]
        ckeys = list(dict.fromkeys(self._ckey[g.key] for g in drawn))
        handles = [handle(self._colors[k], "-", "o") for k in ckeys]
        labels = [self._clabel[k] or "" for k in ckeys]
        for val in dict.fromkeys(self.variants.tokens[g.key][self.style_dim] for g in drawn):
            g = next(g for g in drawn if self.variants.tokens[g.key][self.style_dim] == val)
            handles.append(handle("0.3", self.linestyle(g), self.marker(g)))
            labels.append(val or "")
        return handles, labels


def _sampled(n: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return [to_hex(colormaps["turbo"](x)) for x in np.linspace(0.05, 0.95, n)]


# ---------------------------------------------------------------------------- layout


def _figure(st: Style, panels: int = 1, sharey: bool = False, sharex: bool = False) -> tuple["Figure", np.ndarray]:
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


def _finish(fig: "Figure", st: Style, handles: list, labels: list[str], title: Optional[str]) -> "Figure":
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


def _log_x(ax: "Axes") -> None:
    ax.set_xscale("log")


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


def _label(ax: "Axes", st: Style, x: str | None = None, y: str | None = None, title: str | None = None) -> None:
    if x:
        ax.set_xlabel(METRIC_LABELS.get(x, x), fontsize=st.font)
    if x == "round":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    if y:
        ax.set_ylabel(METRIC_LABELS.get(y, y), fontsize=st.font)
    if title:
        ax.set_title(title, fontsize=st.font)


def _curve(ax: "Axes", g: Group, key: str, look: Look, st: Style, x: str = "round", positive: bool = False) -> None:
    """Mean line of `key` vs `x` with its min-max band over seeds; on log axes drop y <= 0."""
    xs, mean, lo, hi = g.series(key, x)
    if positive:
        keep = lo > 0
        xs, mean, lo, hi = xs[keep], mean[keep], lo[keep], hi[keep]
    color = look.color(g)
    (line,) = ax.plot(xs, mean, label=look.label(g), lw=st.lw, color=color, linestyle=look.linestyle(g))
    line.set_gid(g.key)
    if len(g.runs) > 1:
        band = ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0, label=f"_band {look.label(g)}")
        band.set_gid(g.key)


def _groups(runs: Iterable[Run] | Sequence[Group]) -> list[Group]:
    items = list(runs)
    if not items:
        raise DflError("no runs to plot")
    return items if isinstance(items[0], Group) else group_runs(items)


def _runs(groups: Sequence[Group]) -> list[Run]:
    return [r for g in groups for r in g.runs]


# ---------------------------------------------------------------------------- theory


def _period(run: Run) -> Optional[int]:
    """Rounds that a run's recorded period_gap spans: the period of its time-varying graph, 1 for
    a random sequence without one (random_neighbors records its mean-square gap per round);
    None when the graph cannot be built from config.toml."""
    import topologies
    from topologies.errors import TopologyError

    from .config import from_dict

    try:
        cfg = from_dict(run.config, str(run.path / "config.toml"))
        seq = topologies.build_sequence(cfg.topology.name, cfg.data.num_clients, seed=cfg.seed,
                                        **cfg.topology.graph_params())
    except (DflError, TopologyError):
        return None
    return seq.period or 1


def gossip_rate(g: Group) -> Optional[float]:
    """The factor by which gossip alone shrinks the consensus distance Xi per round.

    (1 - gamma)^(2Q) = (1 - effective_gap)^2, gamma the spectral gap of the run's W (Xi is a
    squared distance; every non-consensus mode shrinks by at least |lambda_2| per gossip step);
    the geometric mean over the recorded rounds and seeds when the gap changes (link failures).
    For a time-varying graph: (1 - period_gap)^(2 / P) over its period of P rounds (P = 1 for
    random_neighbors, whose period_gap is the per-round mean-square gap). None when the runs did
    not record a gap (server averaging) or the period is unknown.
    """
    if all(r.has("period_gap") for r in g.runs):
        period = _period(g.runs[0])
        pg = float(np.mean(g.finals("period_gap")))
        return (1 - pg) ** (2 / period) if period else None
    logs = []
    for r in g.runs:
        eff = r.metrics.get("effective_gap")
        if eff is None or not np.isfinite(eff).any():
            gap = r.metrics.get("spectral_gap")
            if gap is None or not np.isfinite(gap).any():
                return None
            eff = 1 - (1 - gap) ** r.gossip_steps
        eff = eff[np.isfinite(eff)]
        with np.errstate(divide="ignore"):
            logs.append(2 * np.log(np.clip(1 - eff, 0, 1)))
    return float(np.exp(np.mean(np.concatenate(logs))))


def _theory(ax: "Axes", groups: Sequence[Group], look: Look, st: Style) -> bool:
    """Dashed slopes c0 * rate^(round - r0) from each (gap, Q)'s highest first consensus value."""
    starts: dict[float, list[tuple[float, float, float, Group, float]]] = {}
    for g in groups:
        rate = gossip_rate(g)
        xs, mean, lo, _ = g.series("consensus")
        keep = lo > 0
        if rate is None or not 0 < rate < 1 or not keep.any():
            continue
        starts.setdefault(round(rate, 12), []).append((xs[keep][0], mean[keep][0], xs[keep][-1], g, rate))
    if not starts:
        return False
    ax.set_ylim(ax.get_ylim())  # the slopes do not rescale the data
    for items in starts.values():
        rate = items[0][4]
        x0 = min(s[0] for s in items)
        c0 = max(s[1] for s in items if s[0] == x0)
        xs = np.arange(x0, max(s[2] for s in items) + 1)
        (line,) = ax.plot(xs, c0 * rate ** (xs - x0), color=THEORY_COLOR, lw=0.8 * st.lw,
                          linestyle=(0, (4, 2)), label=f"_gossip alone {rate:.6g}", zorder=1.5)
        line.set_gid(f"theory:{rate!r}")
        if len(starts) > 1:
            g = items[0][3]
            xt = x0 + 0.12 * (xs[-1] - x0)
            ax.annotate(f"Q={g.gossip_steps}", (xt, c0 * rate ** (xt - x0)), fontsize=st.font - 2,
                        color=THEORY_COLOR, xytext=(3, 2), textcoords="offset points")
    return True


# ---------------------------------------------------------------------------- figures


def plot_consensus(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
                   title: bool = True) -> "Figure":
    """Consensus distance vs round on a log y axis, one panel per topology (shared y), with the
    gossip-only rate (1 - gap)^(2Q) per round as a dashed grey slope (see `gossip_rate`): where
    a curve stays above its slope, local training drift keeps the clients apart. Zero consensus
    (server averaging) cannot be shown on a log axis and is dropped."""
    st, groups = _style(style), _groups(runs)
    require(_runs(groups), "consensus")
    look = Look(groups)
    groups = [g for g in groups if (g.series("consensus")[2] > 0).any()]
    if not groups:
        raise DflError("every run has consensus distance 0 (server averaging): nothing to draw on a log axis")
    topos = list(dict.fromkeys(g.topology for g in groups))
    fig, axes = _figure(st, len(topos), sharey=True)
    ncols = axes.shape[1]
    theory = False
    for i, (ax, topo) in enumerate(zip(axes.flat, topos)):
        ax.set_yscale("log")
        here = [g for g in groups if g.topology == topo]
        for g in here:
            _curve(ax, g, "consensus", look, st, positive=True)
        _label(ax, st, "round", "consensus" if i % ncols == 0 else None, topo if len(topos) > 1 else None)
        theory |= _theory(ax, here, look, st)
    handles, labels = look.legend(groups, st.lw)
    if theory:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color=THEORY_COLOR, lw=0.8 * st.lw, linestyle=(0, (4, 2))))
        labels.append(r"gossip only: $(1-\gamma)^{2Q}$ per round")
    return _finish(fig, st, handles, labels, look.shared if title else None)


def plot_accuracy(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
                  title: bool = True) -> "Figure":
    """Test accuracy of the averaged model (left) and mean local test accuracy (right) vs round."""
    st, groups = _style(style), _groups(runs)
    require(_runs(groups), ("test_acc", "local_test_acc"))
    look = Look(groups)
    fig, axes = _figure(st, 2, sharey=True)
    for ax, key in zip(axes.flat, ("test_acc", "local_test_acc")):
        for g in groups:
            _curve(ax, g, key, look, st)
        _label(ax, st, "round", key)
    return _finish(fig, st, *look.legend(groups, st.lw), look.shared if title else None)


def plot_accuracy_vs_comm(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
                          title: bool = True) -> "Figure":
    """Test accuracy of the averaged model vs cumulative MB sent by all clients."""
    st, groups = _style(style), _groups(runs)
    require(_runs(groups), ("test_acc", "comm_mb"))
    look = Look(groups)
    fig, axes = _figure(st, 1)
    ax = axes[0, 0]
    for g in groups:
        _curve(ax, g, "test_acc", look, st, x="comm_mb")
    mbs = [r.final("comm_mb") for r in _runs(groups)]
    first = [float(np.nanmin(np.where(r.metrics["comm_mb"] > 0, r.metrics["comm_mb"], np.nan)))
             for r in _runs(groups) if (r.metrics["comm_mb"] > 0).any()]
    if first and min(first) > 0 and max(mbs) / min(first) >= 10:
        _log_x(ax)
    _label(ax, st, "comm_mb", "test_acc")
    return _finish(fig, st, *look.legend(groups, st.lw), look.shared if title else None)


def plot_time(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
              title: bool = True) -> "Figure":
    """Test accuracy of the averaged model (left) and consensus distance (right, log y) vs the
    simulated time sim_time_s of the system model ([system], dfl.system). Groups without it
    are left out; a DflError when no run recorded it. Zero consensus (server averaging) is not
    drawn on the log axis."""
    st, groups = _style(style), _groups(runs)
    groups = [g for g in groups if all(r.has("sim_time_s") for r in g.runs)]
    if not groups:
        raise DflError("no run recorded sim_time_s; set system.enabled = true in the config")
    require(_runs(groups), ("test_acc", "consensus"))
    look = Look(groups)
    fig, axes = _figure(st, 2)
    for ax, key in zip(axes.flat, ("test_acc", "consensus")):
        log = key == "consensus"
        if log:
            ax.set_yscale("log")
        for g in groups:
            if not log or (g.series(key, "sim_time_s")[2] > 0).any():
                _curve(ax, g, key, look, st, x="sim_time_s", positive=log)
        _label(ax, st, "sim_time_s", key)
    return _finish(fig, st, *look.legend(groups, st.lw), look.shared if title else None)


def gap_of(g: Group, gap: str = "effective_gap") -> np.ndarray:
    """The final `gap` of each seed; for a time-varying graph the effective gap is its period's
    per round, 1 - (1 - period_gap)^(1/P) (a single round, one matching, has gap 0)."""
    if gap == "effective_gap" and all(r.has("period_gap") for r in g.runs):
        period = _period(g.runs[0])
        return 1 - (1 - g.finals("period_gap")) ** (1 / period) if period else np.full(len(g.runs), np.nan)
    return g.finals(gap)


def _gap_points(groups: Sequence[Group], gap: str) -> list[Group]:
    """The groups with a finite gap and accuracy in every seed (not server averaging)."""
    return [g for g in groups if np.isfinite(gap_of(g, gap)).all() and np.isfinite(g.finals("test_acc")).all()]


def gap_varies(groups: Sequence[Group], gap: str = "effective_gap") -> bool:
    """True when the groups have at least two different gaps (else the gap figure is one x value)."""
    return len({round(float(gap_of(g, gap).mean()), 9) for g in _gap_points(groups, gap)}) > 1


def plot_gap(runs: Iterable[Run] | Sequence[Group], gap: str = "effective_gap", style: str | Style = "screen",
             title: bool = True) -> "Figure":
    """Final test accuracy (left) and final consensus (right, log y) vs the spectral gap.

    One point per group (the mean over seeds, with min-max error bars when there are several).
    `gap` is the x metric: "effective_gap" (default, 1 - (1 - gap)^Q, so different Q spread out)
    or "spectral_gap". Groups without a finite gap (server averaging) are left out; a DflError
    when fewer than two different gaps remain. Log x when the gaps span more than a decade.
    """
    st, groups = _style(style), _groups(runs)
    require(_runs(groups), ("test_acc", "consensus"))
    look = Look(groups)
    if not gap_varies(groups, gap):
        xs = sorted({f"{gap_of(g, gap).mean():.3g}" for g in _gap_points(groups, gap)})
        have = f"all have {xs[0]}" if xs else f"none has a finite {gap}"
        raise DflError(f"the gap figure needs runs with at least two different {gap} values "
                       f"(several topologies or Q); {have}")
    fig, axes = _figure(st, 2, sharex=True)
    xs_all, drawn = [], []
    for ax, key in zip(axes.flat, ("test_acc", "consensus")):
        for g in _gap_points(groups, gap):
            x, y = gap_of(g, gap), g.finals(key)
            if not np.isfinite(y).all() or (key == "consensus" and (y <= 0).any()):
                continue
            xs_all.append(x.mean())
            color = look.color(g)
            if len(g.runs) > 1:
                ax.errorbar([x.mean()], [y.mean()], yerr=[[y.mean() - y.min()], [y.max() - y.mean()]],
                            fmt="none", ecolor=color, elinewidth=0.8, capsize=1.5)
            pts = ax.scatter([x.mean()], [y.mean()], color=color, marker=look.marker(g), s=4 * st.font,
                             label=look.label(g), zorder=3, edgecolors="none")
            pts.set_gid(g.key)
            drawn.append(g)
        if key == "consensus":
            ax.set_yscale("log")
        _label(ax, st, gap, key)
    pos = [v for v in xs_all if v > 0]
    if pos and max(pos) / min(pos) > 10:
        for ax in axes.flat:
            _log_x(ax)
    drawn = list({g.key: g for g in drawn}.values())
    return _finish(fig, st, *look.legend(drawn, st.lw, points=True), look.shared if title else None)


def plot_flatness(runs: Iterable[Run] | Sequence[Group], keys: Sequence[str] = FLATNESS_KEYS,
                  style: str | Style = "screen", title: bool = True) -> "Figure":
    """Flatness vs round: one panel per recorded key among hessian_max_eig, hessian_trace,
    sharpness. Only the groups whose runs recorded the key are drawn in its panel; a DflError
    when no run recorded any of them."""
    st, groups = _style(style), _groups(runs)
    present = [k for k in keys if any(r.has(k) for r in _runs(groups))]
    if not present:
        raise DflError(f"no run recorded a flatness metric ({', '.join(keys)}); "
                       "set metrics.sharpness_every in the config")
    look = Look(groups)
    fig, axes = _figure(st, len(present))
    for ax, key in zip(axes.flat, present):
        for g in groups:
            if all(r.has(key) for r in g.runs):
                _curve(ax, g, key, look, st)
        _label(ax, st, "round", key)
    drawn = [g for g in groups if any(all(r.has(k) for r in g.runs) for k in present)]
    return _finish(fig, st, *look.legend(drawn, st.lw), look.shared if title else None)


FIGURES: dict[str, Callable[..., "Figure"]] = {
    "consensus": plot_consensus,
    "accuracy": plot_accuracy,
    "comm": plot_accuracy_vs_comm,
    "time": plot_time,
    "gap": plot_gap,
    "flatness": plot_flatness,
}
"""Figure name -> function, in the order `dfl plot` and `dfl report` draw them."""


def default_figures(runs: Iterable[Run] | Sequence[Group]) -> list[str]:
    """The figures worth drawing: all but flatness and time (only when recorded) and gap (only
    when the runs have two different gaps)."""
    groups = _groups(runs)
    return [n for n in FIGURES
            if (n != "flatness" or any(r.has(k) for r in _runs(groups) for k in FLATNESS_KEYS))
            and (n != "gap" or gap_varies(groups))
            and (n != "time" or any(r.has("sim_time_s") for r in _runs(groups)))]


def make_figures(runs: Iterable[Run] | Sequence[Group], names: Sequence[str] | None = None,
                 style: str | Style = "screen", title: bool = True) -> dict[str, "Figure"]:
    """Draw the named figures (default: `default_figures`) in one style."""
    groups = _groups(runs)
    names = default_figures(groups) if names is None else names
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise DflError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    return {name: FIGURES[name](groups, style=style, title=title) for name in names}


def save(fig: "Figure", path: str | Path, dpi: int = 300) -> Path:
    """Write a figure as png, pdf or svg (by the file's extension); parent dirs are created.

    The canvas is saved as it is (no tight cropping), so a paper figure keeps its width.
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
