"""Whole-slide image in, expression map out: tissue -> spot lattice -> patches -> backend -> model.

:func:`predict_image` is the Python API (``stgen.predict_slide``); ``stgen predict`` calls it per slide
after validating every input with :func:`prepare_image`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from stgen.errors import DataInputError
from stgen.wsi.reader import SlideReader, open_slide
from stgen.wsi.settings import ImageSettings, resolve_settings
from stgen.wsi.spots import Spots, read_spots

#: long side of the overview used for tissue detection and stored as the ``hires`` image
OVERVIEW_PX = 2000


def library_id_of(path: str | Path) -> str:
    """Slide name from its file name (``x.ome.tif`` -> ``x``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@dataclass
class ImageJob:
    """One validated slide to predict.

    Args:
        reader: the opened slide (resolution known).
        spots: given spot positions, or None for the virtual lattice.
        library_id: the slide's name (output files, ``uns['spatial']`` key).
    """

    reader: SlideReader
    spots: Spots | None
    library_id: str


@dataclass
class ImageResult:
    """Outcome of :func:`predict_image`.

    Args:
        adata: the predicted slide.
        mask: the tissue mask (None when spots were given).
        timings: seconds per stage (``tissue``, ``extraction``, ``prediction``).
        cache_hit: True when the embeddings came from the cache.
    """

    adata: ad.AnnData
    mask: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False


def prepare_image(path: str | Path, *, mpp: float | None = None, spots: str | Path | Spots | None = None,
                  settings: ImageSettings | None = None) -> ImageJob:
    """Open and check one slide (format, resolution, spots) without reading its pixels."""
    reader = open_slide(path, mpp=mpp)
    given = spots if isinstance(spots, Spots) or spots is None else read_spots(spots)
    if given is None and settings is not None and (settings.spacing_um is None or settings.layout is None):
        missing = [n for n, v in (("--spacing-um", settings.spacing_um), ("--layout", settings.layout)) if v is None]
        raise DataInputError(
            f"slide {reader.path.name}: the checkpoint does not record the training data's spot lattice; pass "
            f"{' and '.join(missing)} (e.g. --spacing-um 100 --layout hex for Visium, 200 square for legacy ST) "
            "or predict at given positions with --spots"
        )
    if given is not None:
        w, h = reader.dimensions
        outside = ((given.coords < 0) | (given.coords >= np.array([w, h]))).any(axis=1)
        if outside.all():
            raise DataInputError(f"--spots {given.source}: no spot lies inside slide {reader.path.name} ({w} x {h} px); "
                             "positions must be full-resolution pixels of this slide")
    return ImageJob(reader=reader, spots=given, library_id=library_id_of(path))


def load_model(checkpoint_or_module: Any) -> tuple[Any, str]:
    """``(module, label)`` from a checkpoint path or an already loaded module."""
    if isinstance(checkpoint_or_module, (str, Path)):
        from stgen.predict import load_module

        return load_module(checkpoint_or_module), f"checkpoint {checkpoint_or_module}"
    return checkpoint_or_module.eval(), "the model"


def image_settings(module: Any, label: str = "the checkpoint", **overrides: Any) -> ImageSettings:
    """:func:`~stgen.wsi.settings.resolve_settings` from a module's ``data_spec`` hyperparameter."""
    return resolve_settings(module.hparams.get("data_spec"), checkpoint=label, **overrides)


def build_extractor(module: Any, settings: ImageSettings, *, device: str = "auto", batch_size: int = 64):
    """The feature backend of ``settings``, checked against the model's input width."""
    from stgen.features.base import build_from_spec

    ext = build_from_spec(settings.features, device=device, batch_size=batch_size)
    if ext.dim != module.hparams.in_dim:
        raise DataInputError(f"feature backend {settings.features.name!r} gives {ext.dim} features per patch but the model "
                         f"takes {module.hparams.in_dim}; use the backend the model was trained with")
    return ext


def embed_spots(job: ImageJob, coords: np.ndarray, settings: ImageSettings, extractor: Any, *,
                cache_dir: str | Path | None = None, use_cache: bool = True, num_workers: int = 0,
                batch_size: int = 64, progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of the patches at ``coords`` (level-0 pixels), from the cache or streamed through a
    DataLoader (``num_workers`` processes cut patches while the backend embeds).

    Returns:
        ``(embeddings [N, F] float32, info)``; ``info`` has the patch plan, cache path and hit flag, and
        the seconds spent waiting for patches (``read_s``) and embedding them (``embed_s``).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from stgen.wsi.cache import EmbeddingCache, cache_key
    from stgen.wsi.patches import PatchDataset, plan_patches

    plan = plan_patches(job.reader, settings.patch_um, settings.patch_px)
    patch = {"patch_um": plan.patch_um, "out_px": plan.out_px, "mpp": job.reader.mpp}
    cache = EmbeddingCache(cache_dir)
    key = cache_key(job.reader.fingerprint(), settings.features.__dict__, patch, coords)
    info: dict[str, Any] = {"patch_level": plan.level, "crop_px": plan.crop_px, "out_px": plan.out_px,
                            "cache": str(cache.path(key)), "read_s": 0.0, "embed_s": 0.0}
    if use_cache:
        hit = cache.get(key, len(coords))
        if hit is not None:
            return hit, {**info, "cache_hit": True}
    loader = DataLoader(PatchDataset(job.reader, plan, coords), batch_size=batch_size, num_workers=num_workers,
                        shuffle=False, persistent_workers=False)
    out = np.empty((len(coords), extractor.dim), dtype=np.float32)
    pos = 0
    t_read = t_embed = 0.0
    with tqdm(total=len(coords), desc=f"embedding {job.library_id}", unit="patch", disable=not progress,
              leave=False) as bar:
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            with torch.no_grad():
                emb = extractor(batch).numpy()
            t2 = time.perf_counter()
            t_read, t_embed = t_read + t1 - t0, t_embed + t2 - t1
            out[pos : pos + len(emb)] = emb
            pos += len(emb)
            bar.update(len(emb))
    info.update(read_s=t_read, embed_s=t_embed)
    if use_cache:
        cache.put(key, out, {"slide": str(job.reader.path), "features": settings.features.__dict__, **patch})
    return out, {**info, "cache_hit": False}


def predict_image(checkpoint_or_module: Any, path: str | Path, *, mpp: float | None = None,
                  spots: str | Path | Spots | None = None, spacing_um: float | None = None,
                  layout: str | None = None, features: str | None = None,
                  feature_params: dict[str, Any] | None = None, patch_um: float | None = None,
                  n_samples: int | None = None, steps: int | None = None, seed: int = 0,
                  cache_dir: str | Path | None = None, use_cache: bool = True, num_workers: int = 0,
                  batch_size: int = 64, device: str = "auto", mask_path: str | Path | None = None,
                  keep_features: bool = False, progress: bool = True, extractor: Any = None,
                  job: ImageJob | None = None, return_result: bool = False, **predict_kwargs: Any) -> Any:
    """Predict the gene panel over a whole-slide (or plain) H&E image that was never sequenced.

    The checkpoint's ``data_spec`` gives the feature backend, the patch size and the spot lattice; the
    slide's tissue is found on a low-resolution overview, a lattice at the training spacing is laid over
    it (or ``spots`` are used), patches of the training size are cut from the closest pyramid level and
    embedded in a stream (cached by slide, backend and lattice), and the model predicts every spot.

    Args:
        checkpoint_or_module: a checkpoint path or a loaded :class:`~stgen.lit.STGenLightning`.
        path: the slide: ``.svs``, ``.tif``/``.tiff`` (pyramidal, OME-TIFF), ``.ndpi``, ``.jpg``, ``.png``.
        mpp: micrometres per level-0 pixel (required when the file does not record it).
        spots: predict at these positions instead of a lattice: a CSV of pixel positions, an ``.h5ad``,
            or :class:`~stgen.wsi.spots.Spots`.
        spacing_um, layout: override the checkpoint's lattice (``"hex"`` or ``"square"``).
        features, feature_params, patch_um: the backend for checkpoints that do not record one.
        n_samples, steps, seed: sampling settings passed to :func:`stgen.predict.predict_slide` (with any
            further ``predict_kwargs``, e.g. ``chunk_size``).
        cache_dir: embedding cache folder (default ``$STGEN_CACHE_DIR`` or ``~/.cache/stgen``).
        use_cache: read and write the embedding cache.
        num_workers: DataLoader processes cutting patches.
        batch_size: patches per batch.
        device: where the backend runs.
        mask_path: write the tissue mask PNG there.
        keep_features: keep the embeddings in ``obsm['features']`` of the result.
        progress: progress bar.
        extractor: a backend already built by :func:`build_extractor` (reused across slides).
        job: a slide already checked by :func:`prepare_image`.
        return_result: return the :class:`ImageResult` (timings, mask) instead of the AnnData.

    Returns:
        AnnData: ``obsm['spatial']`` (level-0 pixels), ``layers['stgen_mean']`` (and ``['stgen_std']``
        with ``n_samples > 1`` or a Gaussian head), ``uns['spatial'][library_id]`` (``images['hires']``, ``scalefactors``)
        for scanpy/squidpy, ``uns['stgen']['wsi']`` (slide, lattice, patch plan, backend, timings).
    """
    from stgen.data.slide import FEATURE_KEY, make_slide
    from stgen.predict import predict_slide, target_info, to_anndata
    from stgen.wsi.lattice import tissue_lattice
    from stgen.wsi.tissue import detect_tissue

    module, label = load_model(checkpoint_or_module)
    settings = image_settings(module, label, features=features, feature_params=feature_params, patch_um=patch_um,
                              spacing_um=spacing_um, layout=layout)
    if job is None:
        job = prepare_image(path, mpp=mpp, spots=spots, settings=settings)
    extractor = extractor if extractor is not None else build_extractor(module, settings, device=device,
                                                                         batch_size=batch_size)
    reader = job.reader
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    overview, ds = reader.overview(OVERVIEW_PX)
    mask = None
    if job.spots is None:
        mask = detect_tissue(overview, ds, reader.mpp)
        if mask_path is not None:
            mask.save_png(mask_path)
        spacing_px = settings.spacing_um / reader.mpp
        coords = tissue_lattice(mask, *reader.dimensions, spacing_px, settings.layout)
        if not len(coords):
            raise DataInputError(f"slide {reader.path.name}: no tissue found (tissue fraction {mask.fraction:.3f}"
                             f"{f'; mask in {mask_path}' if mask_path else ''}); check the slide or give --spots")
        names = [f"spot{i:06d}" for i in range(len(coords))]
        spacing_um = settings.spacing_um
    else:
        coords, names = job.spots.coords, list(job.spots.names)
        spacing_um = _median_spacing(coords) * reader.mpp if len(coords) > 1 else settings.patch_um
    timings["tissue"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    emb, info = embed_spots(job, coords, settings, extractor, cache_dir=cache_dir, use_cache=use_cache,
                            num_workers=num_workers, batch_size=batch_size, progress=progress)
    timings["extraction"] = time.perf_counter() - t0
    timings["patch_read"], timings["patch_embed"] = info.pop("read_s"), info.pop("embed_s")

    t0 = time.perf_counter()
    slide = make_slide(None, coords, slide=job.library_id, barcodes=names, features=emb)
    predict_kwargs.pop("feature_key", None)
    pred = predict_slide(module, slide, n_samples=n_samples, steps=steps, seed=seed, feature_key=FEATURE_KEY,
                         **predict_kwargs)
    from stgen import __version__

    out = to_anndata(slide, pred, {"model_version": __version__, "n_samples": pred.n_samples, "seed": seed,
                                   "model_spec": module.hparams.model_spec, **target_info(module)})
    timings["prediction"] = time.perf_counter() - t0
    if not keep_features:
        del out.obsm[FEATURE_KEY]
    out.obs["in_tissue"] = 1
    out.uns["spatial"] = {job.library_id: {
        "images": {"hires": overview},
        "scalefactors": {"tissue_hires_scalef": 1.0 / ds, "spot_diameter_fullres": 0.5 * spacing_um / reader.mpp},
        "metadata": {"source_image_path": str(reader.path)},
    }}
    from stgen.io import h5ad_safe

    out.uns["stgen"]["wsi"] = h5ad_safe({
        "slide": reader.describe(), "library_id": job.library_id, "n_spots": int(len(coords)),
        "spots": "lattice" if job.spots is None else job.spots.source,
        "spacing_um": float(spacing_um), "layout": settings.layout if job.spots is None else "given",
        "patch_um": settings.patch_um, "patch_px": settings.patch_px, **info,
        "features": {**settings.features.__dict__}, "settings_from": settings.notes,
        "tissue_fraction": None if mask is None else mask.fraction, "mask": None if mask_path is None else str(mask_path),
        "timings_s": timings,
    })
    if return_result:
        return ImageResult(adata=out, mask=mask, timings=timings, cache_hit=bool(info["cache_hit"]))
    return out


def _median_spacing(coords: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(d[:, 1]))
