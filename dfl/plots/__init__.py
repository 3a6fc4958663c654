"""Consistency curves and comparisons of runs, as matplotlib Figures for a screen or a paper.

Every figure takes a list of runs (see dfl.rundir.read) and groups them by everything but the seed:
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
goes in the title (dfl.rundir.groups.describe_variants). Colours (`Look`): one per variant; when the
variants form a grid over two settings, colour tells one apart and line style (marker in the
gap figure) the other, and the legend says which. Colours come from all the groups handed to a
figure, so a report's figures agree; an algorithm alone keeps its fixed colour (ALGO_COLORS,
Paul Tol's colour-blind-safe "muted" palette). Legends sit below the axes, in as many columns
as fit the width; the canvas grows to hold them, so nothing is cut at the edges.

Styles: "screen" (default; larger figures and fonts, PNG) and "paper" (3.3 in wide, one
column, 7-8 pt fonts, PDF or SVG). Figures are built as `matplotlib.figure.Figure` objects
without pyplot, so no global backend is touched; `save` picks the format by extension.

    style.py     colours (ALGO_COLORS, PALETTE), line styles, metric labels, Style / STYLES, `Look`
    layout.py    canvas and panels, axis labels, title and legend below the axes (`finish`)
    curves.py    consensus, accuracy, comm, time and flatness figures (lines with min-max bands)
    gap.py       the gossip-only rate (dashed slopes) and the gap figure
    figures.py   FIGURES by name, default_figures, make_figures, save
    captions.py  what each figure shows and what to look for (the report's captions)
"""
from .captions import FIGURE_CAPTIONS
from .curves import FLATNESS_KEYS, plot_accuracy, plot_accuracy_vs_comm, plot_consensus, plot_flatness, plot_time
from .figures import FIGURES, default_figures, make_figures, save
from .gap import gap_of, gap_varies, gossip_rate, plot_gap
from .style import (ALGO_COLORS, FORMATS, LINESTYLES, MARKERS, METRIC_LABELS, PALETTE, STYLES, THEORY_COLOR, Look,
                    Style, algo_color)

__all__ = ["ALGO_COLORS", "FIGURES", "FIGURE_CAPTIONS", "FLATNESS_KEYS", "FORMATS", "LINESTYLES", "MARKERS",
           "METRIC_LABELS", "PALETTE", "STYLES", "THEORY_COLOR", "Look", "Style", "algo_color", "default_figures",
           "gap_of", "gap_varies", "gossip_rate", "make_figures", "plot_accuracy", "plot_accuracy_vs_comm",
           "plot_consensus", "plot_flatness", "plot_gap", "plot_time", "save"]
