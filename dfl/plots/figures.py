"""The figures by name, which of them are worth drawing for some runs, and `save`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ..errors import DflError
from ..rundir.groups import Group
from ..rundir.read import Run
from .curves import FLATNESS_KEYS, plot_accuracy, plot_accuracy_vs_comm, plot_consensus, plot_flatness, plot_time
from .gap import gap_varies, plot_gap
from .layout import as_groups, runs_of
from .style import FORMATS, Style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

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
    groups = as_groups(runs)
    return [n for n in FIGURES
            if (n != "flatness" or any(r.has(k) for r in runs_of(groups) for k in FLATNESS_KEYS))
            and (n != "gap" or gap_varies(groups))
            and (n != "time" or any(r.has("sim_time_s") for r in runs_of(groups)))]


def make_figures(runs: Iterable[Run] | Sequence[Group], names: Sequence[str] | None = None,
                 style: str | Style = "screen", title: bool = True) -> dict[str, "Figure"]:
    """Draw the named figures (default: `default_figures`) in one style."""
    groups = as_groups(runs)
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
