"""The ``stgen`` command line, one module per sub-command (``stgen.cli.run``, ``.predict``, ...); shared
errors and table formatting in :mod:`stgen.cli.common`."""

from __future__ import annotations

from stgen.cli.app import build_parser, main
from stgen.cli.common import EXIT_USER_ERROR, UserError, format_table

__all__ = ["EXIT_USER_ERROR", "UserError", "build_parser", "format_table", "main"]
