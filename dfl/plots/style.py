"""How the figures look: colours (per algorithm, or a palette), line styles, markers, metric
labels, and the sizes of the two styles ("screen", "paper").

`Look` decides once, over all the groups handed to a figure, the colour, line style, marker and
label of each, so that the figures of one report agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import DflError
from ..rundir.groups import Group, describe_variants

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


def get_style(style: str | Style) -> Style:
    """A Style by name ("screen", "paper"), or the Style given; a DflError names the styles there are."""
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise DflError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    return STYLES[style]


def algo_color(name: str) -> str:
    """The fixed colour of an algorithm (method name, e.g. "dfedsam+asam"); others by hash."""
    return ALGO_COLORS.get(name) or PALETTE[sum(name.encode()) % len(PALETTE)]


class Look:
    """Colour, line style, marker and label of every group, decided once over all the groups.

    One colour per variant, unless the variants form a full grid over one setting with at most
    4 values and the rest (e.g. algorithm x Q): then colour = the rest, line style = that setting
    (`style_dim`). `labels` are the short labels of dfl.rundir.groups.describe_variants, `shared` what
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
    """n colours evenly spaced along the "turbo" colour map (more variants than the palette has)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return [to_hex(colormaps["turbo"](x)) for x in np.linspace(0.05, 0.95, n)]
