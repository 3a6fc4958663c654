"""The spectral gap in the figures: the rate gossip alone would shrink the consensus distance
by (the dashed slopes of the consensus figure) and the gap figure, final accuracy and consensus
vs the effective gap 1 - (1 - gap)^Q.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import numpy as np

from ..errors import DflError
from ..rundir.groups import Group
from ..rundir.read import Run, require
from .layout import as_groups, finish, label_axes, new_figure, runs_of
from .style import THEORY_COLOR, Look, Style, get_style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _period(run: Run) -> Optional[int]:
    """Rounds that a run's recorded period_gap spans: the period of its time-varying graph, 1 for
    a random sequence without one (random_neighbors records its mean-square gap per round);
    None when the graph cannot be built from config.toml."""
    import topologies
    from topologies.errors import TopologyError

    from ..config import from_dict

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


def theory_slopes(ax: "Axes", groups: Sequence[Group], look: Look, st: Style) -> bool:
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
    st, groups = get_style(style), as_groups(runs)
    require(runs_of(groups), ("test_acc", "consensus"))
    look = Look(groups)
    if not gap_varies(groups, gap):
        xs = sorted({f"{gap_of(g, gap).mean():.3g}" for g in _gap_points(groups, gap)})
        have = f"all have {xs[0]}" if xs else f"none has a finite {gap}"
        raise DflError(f"the gap figure needs runs with at least two different {gap} values "
                       f"(several topologies or Q); {have}")
    fig, axes = new_figure(st, 2, sharex=True)
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
        label_axes(ax, st, gap, key)
    pos = [v for v in xs_all if v > 0]
    if pos and max(pos) / min(pos) > 10:
        for ax in axes.flat:
            ax.set_xscale("log")
    drawn = list({g.key: g for g in drawn}.values())
    return finish(fig, st, *look.legend(drawn, st.lw, points=True), look.shared if title else None)
