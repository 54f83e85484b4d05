"""LightningDataModule over Slide AnnData: random crops for training, whole slides for evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from stgen.data.graph import random_crop, slide_to_data


class CropDataset(Dataset):
    """``crops_per_slide`` random crops of every slide per epoch (STFlow's training sampler).

    Each crop keeps the ``max(2, floor(r N))`` spots nearest to a uniformly drawn centre spot, with
    ``r ~ U(crop_min, 1)``, and rebuilds its kNN graph. ``crops_per_slide = 0`` yields whole slides.

    Args:
        graphs: whole-slide graphs.
        graph_k: neighbours per spot in the crop graphs (the encoder's; None: no graph).
        crops_per_slide: crops per slide per epoch (0: whole slides).
        crop_min: lower bound of the crop fraction.
    """

    def __init__(self, graphs: Sequence[Data], graph_k: int | None, crops_per_slide: int = 10,
                 crop_min: float = 0.0) -> None:
        self.graphs = list(graphs)
        self.graph_k = graph_k
        self.crops_per_slide = crops_per_slide
        self.crop_min = crop_min

    def __len__(self) -> int:
        return len(self.graphs) * max(1, self.crops_per_slide)

    def __getitem__(self, i: int) -> Data:
        g = self.graphs[i % len(self.graphs)]
        if self.crops_per_slide == 0:
            return g
        r = self.crop_min + (1 - self.crop_min) * float(torch.rand(()))
        centre = int(torch.randint(g.num_nodes, ()))
        return random_crop(g, self.graph_k, r, centre)


class SlideDataModule(pl.LightningDataModule):
    """Train / validation / test slides as PyG graphs, batched with PyG's ``Batch`` (no padding).

    Args:
        train, val, test: Slide AnnData of each split (val may be empty).
        genes: gene panel.
        graph_k: neighbours per spot of the kNN graph the encoder reads (``stgen.model.graph_k`` of the
            model spec, i.e. ``encoder.k``); None builds no graph (encoders that read none).
        feature_key: ``obsm`` key of the embeddings.
        crops_per_slide: random crops per training slide per epoch (0: whole slides).
        batch_size: crops (or slides) per training step.
        crop_min: lower bound of the crop fraction.
        num_workers: DataLoader workers.
    """

    def __init__(self, train: Sequence[ad.AnnData], val: Sequence[ad.AnnData], test: Sequence[ad.AnnData],
                 genes: Sequence[str], graph_k: int | None, feature_key: str = "features", crops_per_slide: int = 10,
                 batch_size: int = 2, crop_min: float = 0.0, num_workers: int = 0) -> None:
        super().__init__()
        self.genes = list(genes)
        self.graph_k = graph_k
        self.feature_key = feature_key
        self.crops_per_slide = crops_per_slide
        self.batch_size = batch_size
        self.crop_min = crop_min
        self.num_workers = num_workers
        self.graphs = {
            split: [slide_to_data(a, genes=self.genes, k=graph_k, feature_key=feature_key) for a in slides]
            for split, slides in (("train", train), ("val", val), ("test", test))
        }

    @property
    def in_dim(self) -> int:
        return int(self.graphs["train"][0].x.shape[1])

    def train_dataloader(self) -> DataLoader:
        ds = CropDataset(self.graphs["train"], self.graph_k, self.crops_per_slide, self.crop_min)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.graphs[split], batch_size=1, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
