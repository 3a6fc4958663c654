"""Figures of metrics against rounds, MB sent or simulated time: one line per group (its mean
over seeds) with a shaded min-max band when it has several seeds."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..errors import DflError
from ..rundir.groups import Group
from ..rundir.read import Run, require
from .gap import theory_slopes
from .layout import as_groups, finish, label_axes, new_figure, runs_of
from .style import THEORY_COLOR, Look, Style, get_style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FLATNESS_KEYS = ("hessian_max_eig", "hessian_trace", "sharpness")
"""The flatness metrics (metrics.sharpness_every) the flatness figure draws, one panel each."""


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


def plot_consensus(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
                   title: bool = True) -> "Figure":
    """Consensus distance vs round on a log y axis, one panel per topology (shared y), with the
    gossip-only rate (1 - gap)^(2Q) per round as a dashed grey slope (see `gossip_rate`): where
    a curve stays above its slope, local training drift keeps the clients apart. Zero consensus
    (server averaging) cannot be shown on a log axis and is dropped."""
    st, groups = get_style(style), as_groups(runs)
    require(runs_of(groups), "consensus")
    look = Look(groups)
    groups = [g for g in groups if (g.series("consensus")[2] > 0).any()]
    if not groups:
        raise DflError("every run has consensus distance 0 (server averaging): nothing to draw on a log axis")
    topos = list(dict.fromkeys(g.topology for g in groups))
    fig, axes = new_figure(st, len(topos), sharey=True)
    ncols = axes.shape[1]
    theory = False
    for i, (ax, topo) in enumerate(zip(axes.flat, topos)):
        ax.set_yscale("log")
        here = [g for g in groups if g.topology == topo]
        for g in here:
            _curve(ax, g, "consensus", look, st, positive=True)
        label_axes(ax, st, "round", "consensus" if i % ncols == 0 else None, topo if len(topos) > 1 else None)
        theory |= theory_slopes(ax, here, look, st)
    handles, labels = look.legend(groups, st.lw)
    if theory:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color=THEORY_COLOR, lw=0.8 * st.lw, linestyle=(0, (4, 2))))
        labels.append(r"gossip only: $(1-\gamma)^{2Q}$ per round")
    return finish(fig, st, handles, labels, look.shared if title else None)


def plot_accuracy(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
                  title: bool = True) -> "Figure":
    """Test accuracy of the averaged model (left) and mean local test accuracy (right) vs round."""
    st, groups = get_style(style), as_groups(runs)
    require(runs_of(groups), ("test_acc", "local_test_acc"))
    look = Look(groups)
    fig, axes = new_figure(st, 2, sharey=True)
    for ax, key in zip(axes.flat, ("test_acc", "local_test_acc")):
        for g in groups:
            _curve(ax, g, key, look, st)
        label_axes(ax, st, "round", key)
    return finish(fig, st, *look.legend(groups, st.lw), look.shared if title else None)


def plot_accuracy_vs_comm(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
                          title: bool = True) -> "Figure":
    """Test accuracy of the averaged model vs cumulative MB sent by all clients."""
    st, groups = get_style(style), as_groups(runs)
    require(runs_of(groups), ("test_acc", "comm_mb"))
    look = Look(groups)
    fig, axes = new_figure(st, 1)
    ax = axes[0, 0]
    for g in groups:
        _curve(ax, g, "test_acc", look, st, x="comm_mb")
    mbs = [r.final("comm_mb") for r in runs_of(groups)]
    first = [float(np.nanmin(np.where(r.metrics["comm_mb"] > 0, r.metrics["comm_mb"], np.nan)))
             for r in runs_of(groups) if (r.metrics["comm_mb"] > 0).any()]
    if first and min(first) > 0 and max(mbs) / min(first) >= 10:
        ax.set_xscale("log")
    label_axes(ax, st, "comm_mb", "test_acc")
    return finish(fig, st, *look.legend(groups, st.lw), look.shared if title else None)


def plot_time(runs: Iterable[Run] | Sequence[Group], style: str | Style = "screen",
              title: bool = True) -> "Figure":
    """Test accuracy of the averaged model (left) and consensus distance (right, log y) vs the
    simulated time sim_time_s of the system model ([system], dfl.system). Groups without it
    are left out; a DflError when no run recorded it. Zero consensus (server averaging) is not
    drawn on the log axis."""
    st, groups = get_style(style), as_groups(runs)
    groups = [g for g in groups if all(r.has("sim_time_s") for r in g.runs)]
    if not groups:
        raise DflError("no run recorded sim_time_s; set system.enabled = true in the config")
    require(runs_of(groups), ("test_acc", "consensus"))
    look = Look(groups)
    fig, axes = new_figure(st, 2)
    for ax, key in zip(axes.flat, ("test_acc", "consensus")):
        log = key == "consensus"
        if log:
            ax.set_yscale("log")
        for g in groups:
            if not log or (g.series(key, "sim_time_s")[2] > 0).any():
                _curve(ax, g, key, look, st, x="sim_time_s", positive=log)
        label_axes(ax, st, "sim_time_s", key)
    return finish(fig, st, *look.legend(groups, st.lw), look.shared if title else None)


def plot_flatness(runs: Iterable[Run] | Sequence[Group], keys: Sequence[str] = FLATNESS_KEYS,
                  style: str | Style = "screen", title: bool = True) -> "Figure":
    """Flatness vs round: one panel per recorded key among hessian_max_eig, hessian_trace,
    sharpness. Only the groups whose runs recorded the key are drawn in its panel; a DflError
    when no run recorded any of them."""
    st, groups = get_style(style), as_groups(runs)
    present = [k for k in keys if any(r.has(k) for r in runs_of(groups))]
    if not present:
        raise DflError(f"no run recorded a flatness metric ({', '.join(keys)}); "
                       "set metrics.sharpness_every in the config")
    look = Look(groups)
    fig, axes = new_figure(st, len(present))
    for ax, key in zip(axes.flat, present):
        for g in groups:
            if all(r.has(key) for r in g.runs):
                _curve(ax, g, key, look, st)
        label_axes(ax, st, "round", key)
    drawn = [g for g in groups if any(all(r.has(k) for r in g.runs) for k in present)]
    return finish(fig, st, *look.legend(drawn, st.lw), look.shared if title else None)
