"""`dfl report DIR... [--out FILE.html] [--target-acc 0.8]`: one self-contained HTML page of a sweep.

DIR is a sweep directory (`dfl sweep`), a run directory or any directory holding run
directories. The page holds the config, a summary table per group of seeds (final / best test
accuracy, rounds and MB to the target accuracy, final consensus) and every figure of `dfl plot`,
embedded as PNG. Default output: <first DIR>/report.html.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="self-contained HTML report of a sweep: table and figures",
                              description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run directories")
    p.add_argument("--out", metavar="FILE.html", help="output page (default: <first DIR>/report.html)")
    p.add_argument("--target-acc", type=float, metavar="ACC",
                   help="target test accuracy as a fraction, e.g. 0.8 (default: 90%% of the best final accuracy)")
    p.add_argument("--title", help="page title (default: the directory's name)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..report import build_report, write_report

    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):  # fail before the work
        from ..errors import DflError

        raise DflError(f"--out {str(out)!r}: use a file name ending in .html")
    page = build_report(args.dirs, target=args.target_acc, title=args.title,
                        on_note=lambda msg: print(f"dfl report: {msg}", file=sys.stderr))
    print(write_report(page, out))
    return 0
