"""`dfl run | sweep | plot | report | topo | data | bench`.

Each subcommand lives in dfl/commands/<name>.py with `add_parser(subparsers)` and `run(args) -> int`.
User errors (config, data, CLI) print one line and exit with code 2; nothing is half-written.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("run", "sweep", "plot", "report", "topo", "data", "bench")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"dfl: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dfl", description=__doc__.splitlines()[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"dfl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"dfl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dfl.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from .errors import USER_ERRORS, Interrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(f"dfl.commands.{args.command}").run(args) or 0)
    except USER_ERRORS as exc:
        print(f"dfl: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # SIGTERM / SIGINT: the checkpoint is written, the line says how to resume
        print(f"dfl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("dfl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
