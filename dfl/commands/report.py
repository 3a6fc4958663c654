"""`dfl report DIR... [--out FILE.html] [--baseline LABEL] [--markdown]`: one self-contained HTML page of a sweep.

DIR is a sweep directory (`dfl sweep`), a run directory or any directory holding run
directories. The page holds the summary table first (one row per variant: n seeds, mean +- std
over the seeds of final / best test accuracy, the difference to the baseline variant, rounds and
MB to the target accuracy, final consensus), then every figure of `dfl plot` with a caption,
then the config. Default output: <first DIR>/report.html.

--markdown prints the same summary table as Markdown to stdout instead (no figures, nothing
written unless --out is given too), e.g. `dfl report runs/sweep --markdown > results.md`.
--baseline names the variant the differences are taken to, by its label in the table
(default: the first DFedAvg variant, else FedAvg, else the first).
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
    p.add_argument("--baseline", metavar="LABEL",
                   help="variant the table's differences are taken to, by its label, e.g. 'DFedAvg, ring, Q=1' "
                        "(default: the first DFedAvg variant, else FedAvg, else the first)")
    p.add_argument("--markdown", action="store_true",
                   help="print the summary table as Markdown to stdout (the page only with --out)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import DflError
    from ..report import build_markdown, build_report, write_report

    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):  # fail before the work
        raise DflError(f"--out {str(out)!r}: use a file name ending in .html")

    def note(msg: str) -> None:
        print(f"dfl report: {msg}", file=sys.stderr)

    if args.markdown:
        table = build_markdown(args.dirs, target=args.target_acc, baseline=args.baseline, on_note=note)
        if args.out:
            page = build_report(args.dirs, target=args.target_acc, title=args.title, baseline=args.baseline)
            print(write_report(page, out), file=sys.stderr)
        print(table, end="")
        return 0
    page = build_report(args.dirs, target=args.target_acc, title=args.title, on_note=note, baseline=args.baseline)
    print(write_report(page, out))
    return 0
