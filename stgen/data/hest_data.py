"""The ``hest`` data source: HEST-Bench folders (and anything ``stgen convert`` wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stgen.data.slide import patient_id
from stgen.data.source import DATASETS, DataBundle, DataSource, Fold
from stgen.data.spec import DataSpec, FeatureSpec, lattice_geometry, median_geometry
from stgen.errors import ConfigInputError, DataInputError, MissingInputError

if TYPE_CHECKING:
    import anndata as ad

    from stgen.data.hest import HestDataset


@DATASETS.register("hest")
class HestData(DataSource):
    """A HEST-Bench task folder: ``splits/``, ``st/`` (or ``adata/``), ``patches/``, ``var_50genes.json``.

    Patch embeddings are computed once per feature backend (the ``features`` config group, default
    ``default_features``) and cached next to the data (or under ``cache_dir``). Each fold of the split
    files gives one train/test split; a validation split is carved from its training slides (one
    patient when several exist, else one slide) for model selection.

    Args:
        root: the HEST-Bench root (with ``task``) or the task folder itself (``task`` empty).
        task: task name, e.g. ``IDC``.
        fold: fold index, or -1 for every fold.
        default_features: backend used when no ``features=`` is given.
        cache_dir: where embeddings are cached (default: ``<task folder>/embeddings``).
        n_val: patients (or slides) held out from each fold's training slides for validation.
        feature_key: ``obsm`` key for the embeddings.
    """

    uses_features = True

    def __init__(self, root: str = "", task: str = "", fold: int = -1, default_features: str = "efficientnet_lite0",
                 cache_dir: str = "", n_val: int = 1, feature_key: str = "features") -> None:
        super().__init__(feature_key=feature_key)
        if not root:
            raise ConfigInputError("data=hest needs data.root=<HEST-Bench folder> (and data.task=<task> for the bench root)")
        self.root = root
        self.task = task
        self.fold = fold
        self.default_features = default_features
        self.cache_dir = cache_dir
        self.n_val = n_val

    def task_dir(self) -> Path:
        base = Path(self.root).expanduser()
        path = base / self.task if self.task else base
        if not (path / "splits").is_dir():
            raise MissingInputError(
                f"{path} is not a HEST-Bench task folder (no splits/ inside); set data.root to the folder holding "
                "splits/, st/, patches/ (or the bench root plus data.task=<task>)"
            )
        return path

    def read(self, features: dict | None) -> DataBundle:
        from stgen.data.hest import read_hest
        from stgen.data.hest_layout import read_gene_panel
        from stgen.registry import FEATURES

        spec = dict(features or {"name": self.default_features})
        backend = spec.pop("name")
        task_dir = self.task_dir()
        if not read_gene_panel(task_dir):  # checked before any embedding is computed
            raise DataInputError(
                f"HEST folder {task_dir}: no gene panel file var_50genes.json (nor a single var_*genes.json); create "
                '{"genes": ["GENE1", ...]} there (stgen convert writes it)'
            )
        extractor = FEATURES.get(backend)(**spec)  # built up front: the checkpoint records its weights
        ds = read_hest(task_dir, None if self.fold < 0 else self.fold, feature_backend=extractor,
                       feature_key=self.feature_key, cache_dir=self.cache_dir or None)
        folds = []
        for i, (train, test) in enumerate(ds.folds):
            name = f"fold{i if self.fold < 0 else self.fold}"
            fit, val = carve_validation(train, {s: patient_id(ds.slides[s]) or s for s in train}, self.n_val)
            folds.append(Fold(train=fit, val=val, test=list(test), name=name))
        return DataBundle(slides=ds.slides, genes=list(ds.genes), folds=folds, feature_key=self.feature_key,
                          info={"source": "hest", "root": str(ds.root), "features": backend, **spec,
                                "dropped_barcodes": ds.dropped},
                          spec=hest_data_spec(ds, extractor.feature_spec(backend)))


def hest_data_spec(ds: HestDataset, features: FeatureSpec) -> DataSpec:
    """Patch size (from the patches files) and spot lattice (from the spot coordinates) of a HEST folder.

    The patch side in micrometres is ``width_px * um_per_px`` of the patches file (``stgen convert``
    writes ``um_per_px``; HEST-Bench's convention, 224 px at 0.5 µm/px, is assumed when it is absent). The
    lattice needs the full-resolution pixel size of each slide (``uns['stgen']['legacy_st']['um_per_px']``,
    ``uns['stgen']['um_per_px']``, or Visium's 55 µm ``spot_diameter_fullres``); when none is known the
    spacing stays unknown and prediction on images asks for ``--spacing-um``.
    """
    import h5py

    patch_um, patch_px = 112.0, 224
    geoms = []
    for sid, slide in ds.slides.items():
        with h5py.File(ds.samples[sid].patches_path, "r") as f:
            patch_px = int(f["img"].shape[1])
            um = f.attrs.get("um_per_px")
            patch_um = patch_px * float(um) if um is not None else patch_um
        full_um = full_res_um_per_px(slide)
        if full_um is None:  # the reader keeps the expression file's uns out of the slide
            import anndata as ad

            stored = ad.read_h5ad(ds.samples[sid].expr_path, backed="r")
            full_um = full_res_um_per_px(stored)
            stored.file.close()
        if full_um is not None and slide.n_obs >= 3:
            geoms.append(lattice_geometry(slide.obsm["spatial"], full_um))
    spacing, layout = median_geometry(geoms)
    return DataSpec(features=features, patch_um=round(patch_um, 6), patch_px=patch_px, spot_spacing_um=spacing,
                    layout=layout)


def full_res_um_per_px(slide: ad.AnnData) -> float | None:
    """Micrometres per full-resolution pixel of a slide, when its metadata tell."""
    meta = slide.uns.get("stgen", {})
    for value in (meta.get("legacy_st", {}).get("um_per_px"), meta.get("um_per_px")):
        if value:
            return float(value)
    for lib in (slide.uns.get("spatial") or {}).values():
        d = (lib.get("scalefactors") or {}).get("spot_diameter_fullres")
        if d:
            return 55.0 / float(d)  # Visium spots are 55 um wide
    return None


def carve_validation(train: list[str], groups: dict[str, str], n_val: int) -> tuple[list[str], list[str]]:
    """Hold out validation slides from a fold's training slides.

    With at least ``n_val + 2`` groups (patients), the last ``n_val`` groups are held out whole; with
    fewer, one slide of the largest group is held out (sections of one patient are correlated, so this
    selection is optimistic, but it never touches the test fold); a single training slide leaves no
    validation split (select with ``eval.select_on=test`` then, which is labelled in every output).
    """
    if n_val <= 0:
        return list(train), []
    order = sorted(set(groups[s] for s in train))
    if len(order) >= n_val + 2:
        held = set(order[-n_val:])
        return [s for s in train if groups[s] not in held], [s for s in train if groups[s] in held]
    sizes = {g: sum(groups[s] == g for s in train) for g in order}
    largest = max(order, key=lambda g: (sizes[g], g))
    if sizes[largest] < 2:
        return list(train), []
    val = [s for s in train if groups[s] == largest][-1]
    return [s for s in train if s != val], [val]
