"""Data sources: registered readers that turn a dataset into Slide AnnData plus folds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anndata as ad
import numpy as np

from stgen.components import Configurable
from stgen.data.slide import patient_id, slide_id, validate_slide
from stgen.data.spec import DataSpec
from stgen.errors import ConfigInputError
from stgen.registry import DATASETS


@dataclass
class Fold:
    """Slide ids of one train / validation / test split.

    Args:
        train: slides to fit on.
        val: slides for model selection (carved from the training slides; may be empty).
        test: held-out slides.
        name: fold label ("fold0", "P3", ...).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    name: str = "fold0"


@dataclass
class DataBundle:
    """Everything a run needs from a dataset.

    Args:
        slides: Slide AnnData by slide id.
        genes: the gene panel (order of the model's outputs).
        folds: one or more splits.
        feature_key: ``obsm`` key of the patch embeddings.
        info: free-form provenance written into the run's outputs.
        spec: feature backend, patch size and spot lattice of the data (recorded in checkpoints).
    """

    slides: dict[str, ad.AnnData]
    genes: list[str]
    folds: list[Fold]
    feature_key: str = "features"
    info: dict = field(default_factory=dict)
    spec: DataSpec = field(default_factory=DataSpec)

    def validate(self) -> None:
        for sid, a in self.slides.items():
            validate_slide(a, feature_key=self.feature_key, genes=self.genes, name=sid)
        for fold in self.folds:
            for part in (fold.train, fold.val, fold.test):
                unknown = [s for s in part if s not in self.slides]
                if unknown:
                    raise ValueError(f"fold {fold.name}: unknown slide ids {unknown}")
            if not fold.train or not fold.test:
                raise ValueError(f"fold {fold.name}: needs at least one training and one test slide")


class DataSource(Configurable, ABC):
    """Base class of a registered dataset (``data=<name>`` on the command line).

    Subclasses implement :meth:`read`; :meth:`load` owns the invariants: a feature backend (the
    ``features`` config group) is accepted only by sources that compute embeddings with one
    (``uses_features``), and the bundle reports its :class:`~stgen.data.spec.DataSpec`. Constructor
    parameters become config keys.
    A data source does not choose the slide graph: the encoder declares the graph it reads
    (``encoder.k``) and the data module builds exactly that one.

    Args:
        feature_key: ``obsm`` key of the patch embeddings.
    """

    data_args: ClassVar[tuple[str, ...]] = ()
    #: whether the source embeds image patches with a feature backend (the ``features`` config group)
    uses_features: ClassVar[bool] = False

    def __init__(self, feature_key: str = "features") -> None:
        self.feature_key = feature_key

    def load(self, features: Mapping[str, Any] | None = None) -> DataBundle:
        """Read (or make) the slides and their folds.

        Args:
            features: the feature backend config (``{"name": ..., **params}``), or None for the source's
                default.

        Raises:
            ConfigInputError: ``features`` given to a source whose embeddings come from elsewhere.
        """
        if features is not None and not self.uses_features:
            name = next((e.name for e in DATASETS.entries() if e.obj is type(self)), type(self).__name__)
            raise ConfigInputError(
                f"data={name} does not use a feature backend (its embeddings are part of the data), so "
                f"features={dict(features).get('name')} would be ignored; remove features=... or use a data "
                "source that embeds image patches (data=hest)"
            )
        return self.read(None if features is None else dict(features))

    @abstractmethod
    def read(self, features: dict[str, Any] | None) -> DataBundle:
        """The hook: read (or make) the slides, folds and :class:`~stgen.data.spec.DataSpec`."""


def split_by_group(
    slides: Sequence[ad.AnnData], n_test: int = 1, n_val: int = 1, seed: int = 0, name: str = "fold0"
) -> Fold:
    """One split holding out whole patients (or whole slides when no patient ids exist).

    The last ``n_test`` groups (in a seeded random order) are the test set, the ``n_val`` before them
    the validation set; the rest train. Requires at least ``n_test + n_val + 1`` groups.
    """
    groups: dict[str, list[str]] = {}
    for a in slides:
        g = patient_id(a) or slide_id(a)
        groups.setdefault(g, []).append(slide_id(a))
    keys = sorted(groups)
    if len(keys) < n_test + n_val + 1:
        raise ValueError(
            f"cannot split {len(keys)} patient(s)/slide group(s) into {n_test} test, {n_val} validation and "
            "at least 1 training group; add slides or lower the split sizes"
        )
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    test = order[len(order) - n_test:]
    val = order[len(order) - n_test - n_val: len(order) - n_test]
    train = order[: len(order) - n_test - n_val]

    def ids(gs: list[str]) -> list[str]:
        return [s for g in gs for s in groups[g]]

    return Fold(train=ids(train), val=ids(val), test=ids(test), name=name)


DATASETS.set_base(DataSource)
