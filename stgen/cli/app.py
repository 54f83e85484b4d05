"""The ``stgen`` entry point: the parser of every sub-command, and one place that turns user errors into
one line and exit status 2. Building the parser imports nothing beyond the standard library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stgen.cli import components, convert, extract, plot, predict, run
from stgen.cli.common import DEBUG_ENV, EXIT_USER_ERROR, _quiet_third_party_warnings
from stgen.errors import UserInputError, one_line


def _cohort_parser(sub: Any) -> None:
    from stgen.cohort import add_parser

    add_parser(sub)


def _ablate_parser(sub: Any) -> None:
    from stgen.ablate import _ablate_parser as add

    add(sub)


#: every sub-command, in the order ``stgen --help`` lists them
SUBCOMMANDS: list[Callable[[Any], None]] = [run.add_parser, components.add_parser, predict.add_parser, _cohort_parser,
                                            convert.add_parser, extract.add_parser, plot.add_parser, _ablate_parser]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; building it imports nothing beyond the standard library."""
    from stgen import __version__

    parser = argparse.ArgumentParser(
        prog="stgen", description="Generate spatial transcriptomics from histology (STFlow and ablations)."
    )
    parser.add_argument("--version", action="version", version=f"stgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


#: commands that never import Lightning (nothing to quieten)
LIGHT_COMMANDS = frozenset({"list", "describe"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_party_warnings(lightning=args.command not in LIGHT_COMMANDS and not getattr(args, "cfg", None))
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:  # only errors about the user's input; anything else keeps its traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"stgen {args.command}: error: {one_line(exc, 2000)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
