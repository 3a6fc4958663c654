"""`dfl plot DIR... [--out FILE] [--figure NAME ...] [--style paper]`: consistency curves of runs and sweeps.

DIR is a run directory (`dfl run`), a sweep directory (`dfl sweep`) or any directory holding run
directories; runs that differ only by seed are drawn as their mean and min-max band.
Without --out, each figure goes to <first DIR>/plots/<figure>.png (.pdf with --style paper).
With --out FILE, each figure goes to FILE's stem + "-<figure>" + FILE's extension (png, pdf or
svg), e.g. --out fig.pdf -> fig-consensus.pdf, fig-accuracy.pdf, ...; when a single figure is
asked for (--figure NAME), it is written to FILE itself.

--style screen (default) draws for a screen; --style paper draws one-column figures for a
paper: 3.3 in wide, 7-8 pt fonts, as PDF or SVG. The gap figure is drawn when the runs have at
least two different spectral gaps (topologies or Q).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

FIGURE_NAMES = ("consensus", "accuracy", "comm", "time", "gap", "flatness")  # == dfl.plots.FIGURES, without importing it
STYLE_NAMES = ("screen", "paper")  # == dfl.plots.STYLES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plot", help="consensus / accuracy / communication figures of runs and sweeps",
                              description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    p.add_argument("--out", metavar="FILE", help="output file name (.png, .pdf, .svg); one file per figure, "
                                                  "FILE_stem-<figure>.ext (FILE itself for a single --figure)")
    p.add_argument("--figure", dest="figures", action="append", choices=FIGURE_NAMES, metavar="NAME",
                   help=f"draw only this figure (repeatable): {', '.join(FIGURE_NAMES)}; "
                        "default: all (flatness and time only when recorded, gap only when the gaps differ)")
    p.add_argument("--style", choices=STYLE_NAMES, default="screen",
                   help="screen (default: PNG, large) or paper (one column, 3.3 in wide, PDF or SVG)")
    return p


def output_paths(names: list[str], out: str | None, first_dir: str, ext: str = "png") -> dict[str, Path]:
    """Where each figure goes (see the module docstring)."""
    if out is None:
        return {n: Path(first_dir) / "plots" / f"{n}.{ext}" for n in names}
    p = Path(out)
    if len(names) == 1:
        return {names[0]: p}
    return {n: p.with_name(f"{p.stem}-{n}{p.suffix}") for n in names}


def run(args: argparse.Namespace) -> int:
    from .. import plots
    from ..errors import DflError
    from ..rundir.groups import group_runs
    from ..rundir.read import load_runs

    style = plots.STYLES[args.style]
    if args.out is not None and Path(args.out).suffix.lower().lstrip(".") not in style.formats:
        why = "--style paper writes vector figures; " if args.style == "paper" else ""
        exts = ", ".join("." + f for f in style.formats)
        raise DflError(f"--out {args.out!r}: {why}use a file name ending in {exts}")
    runs = load_runs(args.dirs, on_skip=lambda msg: print(f"dfl plot: {msg}", file=sys.stderr))
    groups = group_runs(runs)
    figures = plots.make_figures(groups, list(dict.fromkeys(args.figures)) if args.figures else None, style=style)
    paths = output_paths(list(figures), args.out, args.dirs[0], style.formats[0])
    for name, fig in figures.items():
        print(plots.save(fig, paths[name], dpi=style.dpi))
    return 0
