"""HEST-Bench folder layout: splits, expression files, gene panel, and barcode alignment of expression to patches."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd

from stgen.data.slide import SPATIAL_KEY, UNS_KEY, SlideError, make_slide
from stgen.errors import MissingInputError, reading, safe_name
from stgen.io import read_h5ad

if TYPE_CHECKING:
    pass
from stgen.data.hest_patches import read_patch_index

EXPR_DIRS = ("st", "adata")
PATCHES_DIR = "patches"
SPLITS_DIR = "splits"
EMBEDDINGS_DIR = "embeddings"
DEFAULT_GENES_FILE = "var_50genes.json"


# -- folder layout -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HestSample:
    """Where one sample of a HEST-Bench folder lives."""

    sample_id: str
    patient: str
    expr_path: Path
    patches_path: Path


@dataclass
class AlignmentReport:
    """Barcodes dropped while aligning expression to patches.

    Args:
        n_spots: spots kept (present on both sides).
        patches_without_expression: patch barcodes absent from the expression file.
        spots_without_patch: expression barcodes absent from the patches file.
        examples: a few dropped barcodes, for messages.
    """

    n_spots: int
    patches_without_expression: int = 0
    spots_without_patch: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return self.patches_without_expression + self.spots_without_patch


def _expr_candidates(root: Path, sample_id: str) -> list[Path]:
    return [root / d / f"{sample_id}.h5ad" for d in EXPR_DIRS]


def _resolve(root: Path, given: Any, fallbacks: list[Path], what: str, sample_id: str) -> Path:
    tried: list[Path] = []
    if isinstance(given, str) and given.strip():
        p = Path(given)
        cands = [p] if p.is_absolute() else [root / p]
        cands.append(root / (EXPR_DIRS[0] if what == "expression" else PATCHES_DIR) / p.name)
        if what == "expression":
            cands.append(root / EXPR_DIRS[1] / p.name)
        for c in cands:
            tried.append(c)
            if c.is_file():
                return c
    for c in fallbacks:
        tried.append(c)
        if c.is_file():
            return c
    raise SlideError(
        f"sample {sample_id!r}: {what} file not found "
        f"(tried {', '.join(str(t) for t in dict.fromkeys(tried))}); "
        "fix the path in the split csv or put the file there"
    )


def _split_files(root: Path) -> list[tuple[int, Path, Path]]:
    sdir = root / SPLITS_DIR
    if not sdir.is_dir():
        return []
    out = []
    for train in sdir.glob("train_*.csv"):
        idx = train.stem.split("_", 1)[1]
        if not idx.isdigit():
            continue
        test = sdir / f"test_{idx}.csv"
        if not test.is_file():
            raise SlideError(f"{train} has no matching {test.name}; every train_i.csv needs a test_i.csv")
        out.append((int(idx), train, test))
    return sorted(out)


def read_hest_splits(
    root: str | Path,
) -> tuple[dict[str, HestSample], list[tuple[int, list[str], list[str]]]]:
    """Samples and folds of a HEST-Bench folder.

    Returns:
        ``(samples, folds)``: ``samples`` maps sample ids to their files (patient from a ``patient``
        column when present, else the sample id); ``folds`` lists ``(i, train_ids, test_ids)``. Without a
        ``splits/`` folder every ``st/*.h5ad`` (or ``adata/*.h5ad``) is a sample and there are no folds.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"HEST folder {str(root)!r} does not exist; give the folder holding splits/, st/, patches/")
    samples: dict[str, HestSample] = {}
    folds: list[tuple[int, list[str], list[str]]] = []

    def add_rows(csv: Path) -> list[str]:
        with reading(csv, "a split csv", "it needs a header with sample_id (and patches_path, expr_path)"):
            df = pd.read_csv(csv)
        if "sample_id" not in df.columns:
            raise SlideError(f"{csv}: no 'sample_id' column (found {list(df.columns)}); add a sample_id column")
        if df.empty:
            raise SlideError(f"{csv}: lists no sample; every split file needs at least one sample_id")
        ids = []
        for _, row in df.iterrows():
            sid = safe_name(row["sample_id"], "sample_id", str(csv))  # it names cache and prediction files
            ids.append(sid)
            if sid in samples:
                continue
            patient = row.get("patient")
            patient = (
                sid if patient is None or (isinstance(patient, float) and np.isnan(patient)) else str(patient)
            )
            expr = _resolve(root, row.get("expr_path"), _expr_candidates(root, sid), "expression", sid)
            patches = _resolve(
                root, row.get("patches_path"), [root / PATCHES_DIR / f"{sid}.h5"], "patches", sid
            )
            samples[sid] = HestSample(sid, patient, expr, patches)
        return ids

    for i, train, test in _split_files(root):
        folds.append((i, add_rows(train), add_rows(test)))
    if not folds:
        for d in EXPR_DIRS:
            for h5ad in sorted((root / d).glob("*.h5ad")):
                sid = safe_name(h5ad.stem, "sample name", str(h5ad))
                if sid not in samples:
                    patches = _resolve(root, None, [root / PATCHES_DIR / f"{sid}.h5"], "patches", sid)
                    samples[sid] = HestSample(sid, sid, h5ad, patches)
        if not samples:
            raise SlideError(
                f"HEST folder {str(root)!r}: no splits/train_*.csv and no st/*.h5ad or adata/*.h5ad"
            )
    return samples, folds


def read_gene_panel(root: str | Path, genes_file: str | None = None) -> list[str]:
    """The gene panel of a HEST folder (``var_50genes.json``, or the only ``var_*genes.json``); [] if none."""
    root = Path(root)
    if genes_file is not None:
        path = root / genes_file
        if not path.is_file():
            raise MissingInputError(f"gene panel file {str(path)!r} does not exist; create it as {{\"genes\": [...]}}")
    else:
        path = root / DEFAULT_GENES_FILE
        if not path.is_file():
            found = sorted(root.glob("var_*genes.json"))
            if len(found) != 1:
                return []
            path = found[0]
    with reading(path, "a JSON gene panel", 'write it as {"genes": ["GENE1", ...]}'), open(path) as f:
        data = json.load(f)
    genes = data.get("genes") if isinstance(data, dict) else data
    if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
        raise SlideError(f'{path}: expected {{"genes": ["GENE1", ...]}}; fix the file')
    if not genes:
        raise SlideError(f'{path}: the gene panel is empty; list the genes to predict, {{"genes": ["GENE1", ...]}}')
    if len(set(genes)) != len(genes):
        raise SlideError(f"{path}: the gene panel lists a gene twice; list each gene once")
    return genes


def read_hest_sample(sample: HestSample, *, warn: bool = True) -> tuple[ad.AnnData, AlignmentReport]:
    """One sample as a Slide AnnData, expression aligned to the patches by barcode (patch order kept).

    Barcodes present on one side only are dropped (a warning gives the counts; the returned report and
    ``uns['stgen']['hest']`` keep them). ``obs['patch_index']`` is each spot's row in the patches file.

    Raises:
        SlideError: no barcode is shared by the expression and the patches file.
    """
    p_barcodes, coords = read_patch_index(sample.patches_path)
    expr = read_h5ad(sample.expr_path, what=f"expression file of sample {sample.sample_id!r}")
    if not expr.obs_names.is_unique:
        raise SlideError(
            f"expression file {str(sample.expr_path)!r}: spot barcodes (obs_names) are not unique; "
            "fix the file (adata.obs_names_make_unique() loses the link to the patches)"
        )
    row_of = pd.Index(expr.obs_names).get_indexer(p_barcodes)
    keep = np.flatnonzero(row_of >= 0)
    if len(keep) == 0:
        raise SlideError(
            f"sample {sample.sample_id!r}: no barcode of the patches file {str(sample.patches_path)!r} "
            f"is in the expression file {str(sample.expr_path)!r} (e.g. patches {p_barcodes[:2]} vs "
            f"expression {list(expr.obs_names[:2])}); the two files must describe the same spots"
        )
    rows = row_of[keep]
    no_expr = [p_barcodes[i] for i in np.flatnonzero(row_of < 0)]
    in_patches = set(p_barcodes)
    no_patch = [b for b in expr.obs_names if b not in in_patches]
    report = AlignmentReport(len(keep), len(no_expr), len(no_patch), (no_expr[:3] + no_patch[:3]))
    if report.n_dropped and warn:
        warnings.warn(
            f"sample {sample.sample_id!r}: dropped {report.patches_without_expression} patch barcode(s) "
            f"without expression and {report.spots_without_patch} expression spot(s) without a patch "
            f"(e.g. {report.examples}); {report.n_spots} spots kept",
            UserWarning,
            stacklevel=2,
        )
    X = expr.X[rows]
    # HEST patch coords are the patches' top-left corners; the spot centre is the expression file's
    # obsm['spatial'] (full-resolution pixels), used whenever the file has it
    centres = expr.obsm.get(SPATIAL_KEY)
    spatial_from = "expression obsm['spatial']" if centres is not None else "patch coords"
    xy = np.asarray(centres, dtype=np.float64)[rows] if centres is not None else coords[keep]
    slide = make_slide(
        X,
        xy,
        slide=sample.sample_id,
        genes=list(expr.var_names),
        barcodes=[p_barcodes[i] for i in keep],
        patient=sample.patient,
    )
    for col in expr.obs.columns:
        slide.obs[col] = expr.obs[col].to_numpy()[rows]
    slide.obs["patch_index"] = keep.astype(np.int64)
    slide.uns[UNS_KEY]["hest"] = {
        "expr_path": str(sample.expr_path),
        "patches_path": str(sample.patches_path),
        "patches_without_expression": report.patches_without_expression,
        "spots_without_patch": report.spots_without_patch,
        "spatial_from": spatial_from,
    }
    return slide, report
