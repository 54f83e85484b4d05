"""Lightning callbacks of ``stgen run`` beyond Lightning's own."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class RngState(pl.Callback):
    """The global random states (torch, numpy, Python) travel in every checkpoint.

    They are saved with each checkpoint and restored when training resumes from it, so the crops, the
    shuffling and the dropout of a resumed run continue the uninterrupted run's random streams: on the
    CPU a resumed run ends where the uninterrupted one ends. Stored as tensors and plain lists, so the
    checkpoint still loads with ``torch.load(weights_only=True)``.

    Args:
        none.

    Shapes:
        not applicable (no tensors flow through a callback).
    """

    @property
    def state_key(self) -> str:
        return "RngState"

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, py_gauss = random.getstate()
        return {"torch": torch.get_rng_state(),
                "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)},
                "python": {"version": version, "internal": list(internal), "gauss": py_gauss}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state_dict["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
