"""The LightningModule: thin, built from plain data so ``load_from_checkpoint`` rebuilds the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.data import Batch

from stgen.build import build_model, model_sources
from stgen.metrics import Evaluation, evaluate
from stgen.preprocess import PreprocessSpec
from stgen.registry import RegistryError

#: hyperparameters of older checkpoints that are accepted and ignored
LEGACY_HPARAMS = frozenset({"eval_steps", "eval_n_samples"})


def missing_sources(sources: Mapping[str, Any], where: str) -> str | None:
    """Why the recorded component sources cannot be rebuilt here (a package to install), or None."""
    from stgen.model import KINDS

    for kind, info in (sources or {}).items():
        reg = KINDS.get(kind)
        if reg is not None and info.get("name") not in reg:
            return (f"{where} needs {kind} {info.get('name')!r} from package {info.get('source')!r}, which is "
                    f"not installed; `pip install {info.get('source')}` and retry")
    return None


@dataclass
class SlidePrediction:
    """Prediction of one evaluated slide.

    Args:
        slide_id: the slide.
        mean: ``[N, G]`` predicted log1p expression.
        std: ``[N, G]`` spread over samples (None for one sample).
        true: ``[N, G]`` log1p ground truth.
    """

    slide_id: str
    mean: np.ndarray
    std: np.ndarray | None
    true: np.ndarray


class STGenLightning(pl.LightningModule):
    """Trains an :class:`~stgen.model.STGenModel` and evaluates it with the HEST protocol.

    Validation and test sample whole slides with the generator's own ``steps`` and ``n_samples`` (the
    one sampling setting, recorded in the checkpoint's model spec; fixed ``eval_seed``) and log pooled
    Pearson (``val/pearson``, the early-stopping and checkpoint
    monitor), per-slide Pearson and MSE.

    Args:
        model_spec: ``{"encoder": {...}, "generator": {...}, "prior": {...}}`` (plain data).
        in_dim: patch-embedding width F.
        genes: the gene panel (G = len(genes)).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        eval_seed: seed of the evaluation prior samples.
        sources: which package provided each component (filled in automatically).
        legacy: ``eval_steps``/``eval_n_samples`` of checkpoints written before sampling settings moved to
            the generator; ignored (the generator's recorded settings apply).
        data_spec: the training data's :class:`~stgen.data.spec.DataSpec` as plain data (feature backend,
            patch size, spot lattice); prediction on images reads it. None: unknown (older checkpoints).
        preprocess: input standardisation and target (:class:`~stgen.preprocess.PreprocessSpec` as a
            dict; None, as in older checkpoints, means no standardisation and log1p targets).

    Shapes:
        batches are PyG ``Batch`` objects with ``x [N, F]``, ``pos [N, 2]``, ``y [N, G]``.
    """

    def __init__(self, model_spec: Mapping[str, Any], in_dim: int, genes: Sequence[str], lr: float = 5e-4,
                 weight_decay: float = 0.0, eval_seed: int = 0, sources: Mapping[str, Any] | None = None,
                 data_spec: Mapping[str, Any] | None = None,
                 preprocess: Mapping[str, Any] | None = None, **legacy: Any) -> None:
        unknown = sorted(set(legacy) - LEGACY_HPARAMS)
        if unknown:
            raise TypeError(f"STGenLightning got unexpected argument(s) {', '.join(unknown)}")
        super().__init__()
        spec = {k: dict(v) for k, v in model_spec.items()}
        if sources is None:
            sources = model_sources(spec)
        self.save_hyperparameters({
            "model_spec": spec, "in_dim": in_dim, "genes": list(genes), "lr": lr, "weight_decay": weight_decay,
            "eval_seed": eval_seed,
            "sources": dict(sources), "data_spec": None if data_spec is None else dict(data_spec),
        })
        self.preprocess = PreprocessSpec.from_any(preprocess)
        self.save_hyperparameters({"preprocess": None if preprocess is None else self.preprocess.to_dict()})
        self.genes = list(genes)
        msg = missing_sources(sources, "this model")
        if msg:
            raise RegistryError(msg)
        self.model = build_model(spec, in_dim=in_dim, n_genes=len(self.genes),
                                 standardize=self.preprocess.standardize)
        self._eval: dict[str, list[SlidePrediction]] = {}
        self.results: dict[str, Evaluation] = {}
        self.predictions: dict[str, list[SlidePrediction]] = {}

    @classmethod
    def check_sources(cls, checkpoint_path: str) -> None:
        """Raise a clear error when a checkpoint needs a component whose package is not installed."""
        from stgen.checkpoint import check_sources

        check_sources(checkpoint_path)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch.num_graphs, on_step=True, on_epoch=True)
        return out.loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- evaluation -------------------------------------------------------------------------------
    def predict_batch(self, batch: Batch, seed: int | None = None):
        return self.model.predict(batch, seed=self.hparams.eval_seed if seed is None else seed)

    def _collect(self, split: str, batch: Batch) -> None:
        out = self.predict_batch(batch)
        mean = out.mean.detach().float().cpu().numpy()
        std = None if out.std is None else out.std.detach().float().cpu().numpy()
        true = batch.y.detach().float().cpu().numpy()
        ptr = batch.ptr.cpu().numpy()
        ids = batch.slide_id if isinstance(batch.slide_id, list) else [batch.slide_id]
        for i, sid in enumerate(ids):
            sl = slice(ptr[i], ptr[i + 1])
            self._eval.setdefault(split, []).append(
                SlidePrediction(sid, mean[sl], None if std is None else std[sl], true[sl]))

    def _finish(self, split: str) -> None:
        items = self._eval.pop(split, [])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[SlidePrediction]] = [[] for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(gathered, items)
            seen: dict[str, SlidePrediction] = {}
            for part in gathered:
                for it in part:
                    seen.setdefault(it.slide_id, it)
            items = list(seen.values())
        if not items:
            return
        ev = evaluate([it.mean for it in items], [it.true for it in items], [it.slide_id for it in items],
                      self.genes)
        self.results[split] = ev
        self.predictions[split] = items
        pearson = ev.pearson if np.isfinite(ev.pearson) else -1.0
        self.log(f"{split}/pearson", pearson, prog_bar=True, batch_size=1)
        self.log(f"{split}/mse", ev.mse, batch_size=1)
        self.log(f"{split}/genes_dropped", float(ev.n_dropped), batch_size=1)

    def on_validation_epoch_start(self) -> None:
        self._eval.pop("val", None)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._collect("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_start(self) -> None:
        self._eval.pop("test", None)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._collect("test", batch)

    def on_test_epoch_end(self) -> None:
        self._finish("test")
