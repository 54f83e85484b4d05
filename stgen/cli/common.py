"""What every sub-command shares: the user-error type, exit codes, table formatting, quiet logs."""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from typing import Any

from stgen.errors import UserInputError

EXIT_USER_ERROR = 2
#: set STGEN_DEBUG=1 to see the traceback of a user error too
DEBUG_ENV = "STGEN_DEBUG"


class UserError(UserInputError):
    """An error caused by the user's input: printed as one message, exit code 2."""


def _quiet_third_party_warnings(lightning: bool = True) -> None:
    """Silence third-party chatter; ``lightning=False`` leaves Lightning unimported (fast commands)."""
    import logging

    if lightning:
        import pytorch_lightning  # noqa: F401 - configures its loggers on import; quiet them afterwards

        for name in ("squidpy", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    for mod in ("torch_geometric", "squidpy", "anndata", "dask", "numba", "spatialdata", "xarray_schema"):
        warnings.filterwarnings("ignore", module=mod)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*`isinstance` treats .*")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table of ``rows`` (floats with 4 decimals)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([line, sep, *body])


def plain(text: str) -> str:
    """Docstring text without reST markup: ``:class:`x```, ``x``, `x` and *x* become x."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1),
                  text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    return re.sub(r"(?<!\w)\*{1,2}([^*\s][^*]*?)\*{1,2}(?!\w)", r"\1", text)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """``--n-samples``, ``--steps``, ``--seed`` (defaults: the checkpoint's), and the retired ``--k``."""
    p.add_argument("--n-samples", type=int, default=None,
                   help="samples per slide: mean and std (default: the checkpoint's generator.n_samples)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's generator.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)  # removed: an error that says why


def check_sampling_args(args: argparse.Namespace) -> None:
    """Refuse the retired ``--k`` (k is read from the checkpoint) and non-positive sampling settings."""
    if args.k is not None:
        raise UserError("--k is not an option: k is set with encoder.k when training and read from the checkpoint "
                        "(prediction builds the graph the trained encoder reads)")
    for flag, value in (("--n-samples", args.n_samples), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1")
