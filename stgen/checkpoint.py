"""The one place a checkpoint file is read: explicit ``weights_only``, one clear error for a bad file.

A stgen checkpoint is a Lightning checkpoint of :class:`~stgen.lit.STGenLightning`: ``state_dict``,
``hyper_parameters`` (model spec, input width, gene panel, component sources) and Lightning's bookkeeping.
It holds only tensors and plain Python data, so it is read with ``torch.load(..., weights_only=True)``:
a file whose pickle needs arbitrary Python objects is refused rather than executed.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from stgen.errors import CheckpointError, MissingInputError, one_line

#: keys every stgen checkpoint has
REQUIRED_KEYS = ("state_dict", "hyper_parameters")
#: hyper-parameters the LightningModule is rebuilt from
REQUIRED_HPARAMS = ("model_spec", "in_dim", "genes")
FIX = "pass a checkpoint written by `stgen run` (<run folder>/checkpoints/best.ckpt or last.ckpt)"


def read_checkpoint(path: str | Path, *, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, checked to be a stgen checkpoint.

    Args:
        path: the ``.ckpt`` file.
        weights_only: passed to ``torch.load``; True refuses pickles that need arbitrary Python objects.

    Raises:
        MissingInputError: no such file.
        CheckpointError: truncated or corrupt file, a pickle the safe loader refuses, a plain torch file
            or a checkpoint of another program (missing keys).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} does not exist; {FIX}")
    if not zipfile.is_zipfile(path):  # every torch.save file since torch 1.6 is a zip archive
        raise CheckpointError(f"checkpoint {path} is truncated or not a torch checkpoint (not a zip archive); {FIX}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"e.g. {found.group(1)}" if found else one_line(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)), 100)
        raise CheckpointError(
            f"checkpoint {path}: the safe loader (torch.load weights_only=True) refuses it: it holds Python "
            f"objects other than tensors and plain data ({what}), which could run code; {FIX}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError,
            ModuleNotFoundError, ImportError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a torch checkpoint ({type(exc).__name__}: "
            f"{one_line(exc, 120)}); {FIX}"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a stgen checkpoint; {FIX}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    hparams = ckpt.get("hyper_parameters")
    if not missing and isinstance(hparams, dict):
        missing = [f"hyper_parameters.{k}" for k in REQUIRED_HPARAMS if k not in hparams]
    elif not missing:
        missing = ["hyper_parameters (a dict)"]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is a torch file but not a stgen checkpoint (missing {', '.join(missing)}); {FIX}"
        )
    return ckpt


def load_module(path: str | Path, map_location: str = "cpu") -> Any:
    """Rebuild the trained :class:`~stgen.lit.STGenLightning` of a checkpoint, in eval mode.

    A checkpoint naming a component whose package is not installed raises
    :class:`~stgen.registry.RegistryError` naming the package; weights that do not fit the recorded
    model give a :class:`CheckpointError`.
    """
    from stgen.lit import STGenLightning, missing_sources
    from stgen.registry import RegistryError

    ckpt = read_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    msg = missing_sources(hparams.get("sources") or {}, f"checkpoint {path}")
    if msg:
        raise RegistryError(msg)
    try:
        module = STGenLightning(**hparams)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path}: its hyper-parameters do not build a model ({exc}); {FIX}") from exc
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit the recorded model ({one_line(exc, 160)}); {FIX}"
        ) from exc
    module.to(map_location)
    module.eval()
    return module


def check_sources(path: str | Path) -> None:
    """Raise a clear error when a checkpoint needs a component whose package is not installed."""
    from stgen.lit import missing_sources
    from stgen.registry import RegistryError

    ckpt = read_checkpoint(path)
    msg = missing_sources(ckpt["hyper_parameters"].get("sources") or {}, f"checkpoint {path}")
    if msg:
        raise RegistryError(msg)
