"""Errors caused by the user's input, and guards that turn unreadable files into one of them.

Only errors about what the user gave (a config value, a data file, a checkpoint, a path) are
:class:`UserInputError`: the command line prints them as one line (``stgen <cmd>: error: ...``) and exits
with status 2. Every other exception keeps its traceback, so bugs in stgen stay visible.

The message of a user error names what is wrong, where (file, slide or option) and how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserInputError(Exception):
    """Base of every error caused by the user's input (printed as one line, exit status 2).

    Args:
        message: what is wrong, naming the file, slide or option and how to fix it.
    """


class ConfigInputError(UserInputError, ValueError):
    """An invalid configuration value or command-line option."""


class DataInputError(UserInputError, ValueError):
    """A data file, slide or folder that cannot be used as it is."""


class MissingInputError(UserInputError, FileNotFoundError):
    """A file or folder the user named (or the data layout requires) does not exist."""


class OutputExistsError(UserInputError, FileExistsError):
    """An output path that exists already (stgen never overwrites the user's files)."""


class CheckpointError(UserInputError, ValueError):
    """A file that cannot be loaded as a stgen checkpoint."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@contextmanager
def reading(path: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Turn any failure while reading ``path`` (corrupt, truncated, wrong format) into a DataInputError.

    A missing file becomes a :class:`MissingInputError`; user errors raised inside pass through.

    Args:
        path: the file being read.
        what: what the file should be, e.g. ``"an AnnData .h5ad file"``.
        fix: what to do, e.g. ``"re-write it with anndata"``.
    """
    try:
        yield
    except UserInputError:
        raise
    except FileNotFoundError as exc:
        raise MissingInputError(f"{path}: file not found; {fix}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to parse a user's file is about that file
        raise DataInputError(
            f"{path} cannot be read as {what} ({type(exc).__name__}: {one_line(exc, 160)}); {fix}"
        ) from exc


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")


def safe_name(name: object, what: str, where: str) -> str:
    """``name`` when it can be used as one file-name component, else a :class:`DataInputError`.

    Names read from files (sample ids, section names) become parts of paths; a name with a path
    separator, ``..``, a leading dot, an absolute path or control characters could write outside the
    intended folder, so it is refused.

    Args:
        name: the candidate name.
        what: what it names, e.g. ``"sample_id"``.
        where: where it was read, e.g. the split csv.
    """
    text = str(name)
    if (not _SAFE_NAME.match(text) or ".." in text or len(text) > 200
            or Path(text).is_absolute() or os.sep in text or (os.altsep and os.altsep in text)):
        raise DataInputError(
            f"{where}: {what} {text!r} cannot be used as a file name (it must be 1-200 letters, digits, "
            "'.', '_', '-' or '+', start with a letter or digit and contain no '..' or path separator); "
            f"rename it"
        )
    return text


def inside(path: Path, folder: Path, what: str) -> Path:
    """``path`` when it resolves inside ``folder``, else a :class:`DataInputError` naming both."""
    resolved, base = Path(path).resolve(), Path(folder).resolve()
    if resolved != base and base not in resolved.parents:
        raise DataInputError(f"{what} {str(path)!r} points outside {str(folder)!r}; keep it inside that folder")
    return Path(path)
