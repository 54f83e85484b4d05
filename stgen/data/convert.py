"""Write slides and their patches as a HEST-Bench folder; her2st convenience reader."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from stgen.data.hest_layout import EXPR_DIRS, PATCHES_DIR, SPLITS_DIR
from stgen.data.hest_patches import Patches, write_patches_h5
from stgen.data.legacy_st import (
    DEFAULT_PATCH_PX,
    DEFAULT_PATCH_UM,
    extract_patches,
    find_section_image,
    open_image,
    read_legacy_st,
)
from stgen.data.slide import SPATIAL_KEY, SlideError, patient_id, slide_id, validate_slide
from stgen.errors import ConfigInputError, MissingInputError, OutputExistsError, safe_name
from stgen.io import write_h5ad

SPLIT_MODES = ("patient", "section")


def select_variable_genes(
    slides: Sequence[ad.AnnData],
    n_genes: int = 50,
    *,
    min_spot_fraction: float = 0.1,
    include: Sequence[str] = (),
) -> list[str]:
    """The ``n_genes`` most variable genes of the pooled slides, on log1p counts as in HEST.

    Candidates are the genes detected in at least ``min_spot_fraction`` of the spots of every slide
    (names containing ``BLANK`` or ``Control`` excluded). The raw counts of all slides are stacked, log1p
    transformed (no library-size normalisation), and ranked by variance. Ranking by variance (rather
    than by dispersion normalised within mean bins) keeps well-expressed, variable genes such as
    biomarkers, instead of noisy low-count genes. Genes in ``include`` (e.g. ``ERBB2``) are always in the
    panel when they pass the detection filter. Returned most variable first.
    """
    if not slides:
        raise ValueError("select_variable_genes: no slides")
    common: set[str] | None = None
    order: list[str] = []
    for s in slides:
        X = s.X
        detected = (
            np.asarray((X > 0).sum(axis=0)).ravel() if sp.issparse(X) else (np.asarray(X) > 0).sum(axis=0)
        )
        ok = {
            g for g, d in zip(s.var_names, detected, strict=True) if d >= np.ceil(min_spot_fraction * s.n_obs)
        }
        if common is None:
            order = [g for g in s.var_names if g in ok]
            common = ok
        else:
            common &= ok
    genes = [g for g in order if g in common and "BLANK" not in g and "Control" not in g]
    if len(genes) < n_genes:
        raise SlideError(
            f"only {len(genes)} gene(s) are detected in >= {min_spot_fraction:.0%} of the spots of every "
            f"slide; cannot choose {n_genes}; lower n_genes or min_spot_fraction"
        )
    blocks = [s[:, genes].X for s in slides]
    X = sp.vstack([sp.csr_matrix(b) for b in blocks]).astype(np.float32)
    X = X.log1p()
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    ranked = [genes[i] for i in np.argsort(-var, kind="stable")]
    missing = [g for g in include if g not in genes]
    if missing:
        raise SlideError(f"gene(s) {missing} to include are not detected in >= {min_spot_fraction:.0%} of the spots "
                         "of every slide")
    forced = [g for g in ranked if g in set(include)]
    rest = [g for g in ranked if g not in set(include)][: max(0, n_genes - len(forced))]
    keep = set(forced) | set(rest)
    return [g for g in ranked if g in keep]


def _folds(ids: list[str], groups: list[str]) -> list[tuple[list[str], list[str]]]:
    uniq = list(dict.fromkeys(groups))
    if len(uniq) < 2:
        raise SlideError(
            f"cannot make leave-one-out splits: all slides belong to one group ({uniq}); add slides of "
            "another patient or use split_by='section'"
        )
    folds = []
    for g in uniq:
        test = [i for i, gi in zip(ids, groups, strict=True) if gi == g]
        train = [i for i, gi in zip(ids, groups, strict=True) if gi != g]
        folds.append((train, test))
    return folds


def _check_output(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"output {str(out)!r} exists and is not a folder; choose another path")
        if any(out.iterdir()):
            raise OutputExistsError(
                f"output folder {str(out)!r} exists and is not empty; refusing to overwrite it. Remove it or "
                "choose another output folder (-o)"
            )


def convert_to_hest(
    slides_with_patches: Sequence[tuple[ad.AnnData, Patches]],
    out_root: str | Path,
    split_by: str = "patient",
    n_genes: int = 50,
    *,
    min_spot_fraction: float = 0.1,
    include_genes: Sequence[str] = (),
) -> Path:
    """Write slides and patches as a HEST-Bench folder.

    Layout written::

        st/<slide_id>.h5ad        # the slide (raw counts, obsm['spatial'], uns['stgen'])
        patches/<slide_id>.h5     # img, coords, barcode (N, 1) bytes
        splits/train_{i}.csv, splits/test_{i}.csv   # sample_id, patches_path, expr_path, patient
        var_{n_genes}genes.json   # {"genes": [...]} from :func:`select_variable_genes`

    Folds are leave-one-patient-out (``split_by="patient"``, patient = ``uns['stgen']['patient']``) or
    leave-one-section-out (``"section"``), in order of first appearance. The folder is built in a
    temporary sibling folder and renamed into place, so a failure leaves nothing behind.

    Args:
        slides_with_patches: ``(slide, patches)`` pairs; slide ids must be unique and every patch barcode
            must be a spot of its slide.
        out_root: the folder to create (must not exist, or be empty).
        split_by: ``"patient"`` or ``"section"``.
        n_genes: size of the gene panel.
        min_spot_fraction: see :func:`select_variable_genes`.

    Returns:
        ``out_root``.

    Raises:
        FileExistsError: ``out_root`` exists and is not empty.
    """
    if split_by not in SPLIT_MODES:
        raise ConfigInputError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if n_genes < 1:
        raise ConfigInputError(f"n_genes must be >= 1, got {n_genes}")
    out = Path(out_root)
    _check_output(out)
    pairs = [(s, p) for s, p in slides_with_patches]
    if not pairs:
        raise ConfigInputError("convert_to_hest: no slides given")
    ids: list[str] = []
    for s, p in pairs:
        sid = slide_id(s, default="")
        if not sid:
            raise SlideError(
                "a slide has no uns['stgen']['slide_id']; build slides with make_slide(..., slide=...)"
            )
        safe_name(sid, "slide id", "uns['stgen']['slide_id']")  # it names the files written
        if sid in ids:
            raise SlideError(f"slide id {sid!r} appears twice; slide ids must be unique")
        validate_slide(s, feature_key=None, name=sid)
        if not isinstance(p, Patches):
            raise TypeError(
                f"slide {sid!r}: patches must be a stgen.data.hest_patches.Patches, got {type(p).__name__}"
            )
        extra = [b for b in p.barcodes if b not in s.obs_names]
        if extra:
            raise SlideError(
                f"slide {sid!r}: {len(extra)} patch barcode(s) are not spots of the slide (e.g. {extra[:3]})"
            )
        ids.append(sid)
    groups = ids if split_by == "section" else [patient_id(s) or slide_id(s) for s, _ in pairs]
    folds = _folds(ids, groups)
    genes = select_variable_genes([s for s, _ in pairs], n_genes, min_spot_fraction=min_spot_fraction,
                                  include=include_genes)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        expr_dir = EXPR_DIRS[0]
        for d in (expr_dir, PATCHES_DIR, SPLITS_DIR):
            (tmp / d).mkdir()
        rows = {}
        for (s, p), sid, grp in zip(pairs, ids, groups, strict=True):
            slide = s.copy()
            slide.obsm[SPATIAL_KEY] = np.asarray(slide.obsm[SPATIAL_KEY], dtype=np.float64)
            write_h5ad(slide, tmp / expr_dir / f"{sid}.h5ad")
            write_patches_h5(tmp / PATCHES_DIR / f"{sid}.h5", p)
            rows[sid] = {
                "sample_id": sid,
                "patches_path": f"{PATCHES_DIR}/{sid}.h5",
                "expr_path": f"{expr_dir}/{sid}.h5ad",
                "patient": patient_id(s) or sid,
                "group": grp,
            }
        for i, (train, test) in enumerate(folds):
            pd.DataFrame([rows[s] for s in train]).to_csv(tmp / SPLITS_DIR / f"train_{i}.csv", index=False)
            pd.DataFrame([rows[s] for s in test]).to_csv(tmp / SPLITS_DIR / f"test_{i}.csv", index=False)
        with open(tmp / f"var_{n_genes}genes.json", "w") as f:
            json.dump({"genes": genes}, f, indent=1)
        _check_output(out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_her2st(
    root: str | Path,
    sections: Sequence[str] | None = None,
    *,
    patch_um: float = DEFAULT_PATCH_UM,
    out_px: int = DEFAULT_PATCH_PX,
    progress: bool = False,
) -> list[tuple[ad.AnnData, Patches]]:
    """Read her2st-layout sections with their patches (each image decoded once, then released).

    Args:
        root: the data set folder (``counts/``, ``spots/``, ``images/``).
        sections: section names (default: every ``counts/*.tsv.gz``, sorted).
        patch_um: patch width in micrometres (HEST: 112).
        out_px: patch width in pixels after resampling (HEST: 224).
        progress: print one line per section.

    Returns:
        ``[(slide, patches), ...]`` ready for :func:`convert_to_hest`.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"input folder {root} does not exist; give the folder holding counts/, spots/, images/")
    if sections is None:
        sections = sorted(p.name.split(".")[0] for p in (root / "counts").glob("*.tsv*"))
    if not sections:
        raise MissingInputError(f"{root}: no counts/*.tsv.gz files; give the folder holding counts/, spots/, images/")
    sections = [safe_name(sec, "section", "--sections") for sec in sections]
    if len(set(sections)) != len(sections):
        raise ConfigInputError(f"--sections lists a section twice: {list(sections)}; list each once")
    out = []
    for sec in sections:
        slide = read_legacy_st(root, sec)
        path, _ = find_section_image(root, sec)
        with open_image(path) as image:
            patches = extract_patches(slide, image, patch_um=patch_um, out_px=out_px)
        if progress:
            print(f"{sec}: {slide.n_obs} spots, {len(patches)} patches ({patches.um_per_px:.3f} um/px)")
        out.append((slide, patches))
    return out
