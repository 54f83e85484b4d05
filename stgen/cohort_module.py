"""The LightningModule behind ``stgen predict-cohort``: one slide file per ``predict_step``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from stgen.cohort import assign_slides


class _Slides(Dataset):
    """The input paths of one process's share (one slide per item, no collation)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        return str(self.paths[i])


@dataclass
class SlideRecord:
    """What one process did with one slide.

    Args:
        slide: input file name.
        status: ``"written"`` or ``"skipped"`` (the output existed).
        rank: global rank of the process.
        n_spots: spots predicted (0 when skipped).
        seconds: wall time of read, prediction and write.
    """

    slide: str
    status: str
    rank: int
    n_spots: int
    seconds: float


class CohortPredictor(pl.LightningModule):
    """A LightningModule whose ``predict_step`` predicts and writes one slide file.

    Args:
        checkpoint: the trained model.
        inputs: input ``.h5ad`` files (see :func:`collect_inputs`).
        out_dir: output folder (created; existing outputs are skipped, never overwritten).
        predict_kwargs: options of :func:`stgen.predict.predict_slide` (n_samples, steps, seed, ...).

    Shapes:
        none (files in, files out).
    """

    def __init__(self, checkpoint: str | Path, inputs: Sequence[Path], out_dir: str | Path,
                 predict_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        from stgen.predict import load_module

        self.checkpoint = str(checkpoint)
        self.inputs = list(inputs)
        self.out_dir = Path(out_dir)
        self.predict_kwargs = dict(predict_kwargs or {})
        self.trained = load_module(checkpoint)

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        sizes = [p.stat().st_size for p in self.inputs]
        mine = [self.inputs[i] for i in assign_slides(sizes, world)[rank]]
        return DataLoader(_Slides(mine), batch_size=None, shuffle=False, num_workers=0)

    def predict_step(self, batch: str, batch_idx: int = 0) -> SlideRecord:
        from stgen.predict import predict_file

        src = Path(batch)
        dst = self.out_dir / src.name
        t0 = time.perf_counter()
        n = predict_file(self.trained, self.checkpoint, src, dst, **self.predict_kwargs)
        status = "skipped" if n is None else "written"
        rec = SlideRecord(slide=src.name, status=status, rank=self.trainer.global_rank, n_spots=n or 0,
                          seconds=round(time.perf_counter() - t0, 2))
        print(f"[rank {rec.rank}] {rec.status} {dst} ({rec.n_spots} spots, {rec.seconds} s)", flush=True)
        return rec


