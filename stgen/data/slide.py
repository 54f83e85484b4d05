"""The Slide contract: one AnnData per slide, and the one function that validates it."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

SPATIAL_KEY = "spatial"
FEATURE_KEY = "features"
UNS_KEY = "stgen"


class SlideError(ValueError):
    """A slide that does not satisfy the Slide contract (message names slide, field and fix)."""


def slide_id(adata: ad.AnnData, default: str = "slide") -> str:
    meta = adata.uns.get(UNS_KEY, {}) if isinstance(adata.uns, dict) or hasattr(adata.uns, "get") else {}
    return str(meta.get("slide_id", default))


def patient_id(adata: ad.AnnData) -> str | None:
    meta = adata.uns.get(UNS_KEY, {})
    p = meta.get("patient")
    return None if p is None else str(p)


def make_slide(
    counts: np.ndarray | sp.spmatrix | None,
    coords: np.ndarray,
    *,
    slide: str,
    genes: Sequence[str] | None = None,
    barcodes: Sequence[str] | None = None,
    features: np.ndarray | None = None,
    patient: str | None = None,
    feature_key: str = FEATURE_KEY,
) -> ad.AnnData:
    """Build a Slide AnnData from arrays (counts may be None for a slide that was never sequenced)."""
    n = len(coords)
    if counts is None:
        counts = np.zeros((n, 0), dtype=np.float32)
        genes = []
    var = pd.DataFrame(index=pd.Index([str(g) for g in (genes if genes is not None else range(counts.shape[1]))]))
    obs = pd.DataFrame(index=pd.Index([str(b) for b in (barcodes if barcodes is not None else range(n))]))
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    adata.obsm[SPATIAL_KEY] = np.asarray(coords, dtype=np.float64)
    if features is not None:
        adata.obsm[feature_key] = np.asarray(features, dtype=np.float32)
    adata.uns[UNS_KEY] = {"slide_id": slide, **({"patient": patient} if patient is not None else {})}
    return adata


def validate_slide(
    adata: ad.AnnData,
    *,
    feature_key: str | None = FEATURE_KEY,
    genes: Sequence[str] | None = None,
    require_counts: bool = True,
    name: str | None = None,
) -> None:
    """Check one slide against the contract; raise one :class:`SlideError` naming slide, field and fix.

    Args:
        adata: the slide.
        feature_key: ``obsm`` key of the patch embeddings (None: features not required).
        genes: gene panel that must be present in ``var_names``.
        require_counts: whether ``X`` must hold non-negative counts (False for prediction).
        name: how to call the slide in messages (default: ``uns['stgen']['slide_id']``).
    """
    if not isinstance(adata, ad.AnnData):
        raise SlideError(f"slide {name or '?'}: expected an AnnData, got {type(adata).__name__}")
    sid = name or slide_id(adata, default="<unnamed>")
    where = f"slide {sid!r}"
    n = adata.n_obs
    if n < 2:
        raise SlideError(f"{where}: has {n} spot(s); a slide needs at least 2 spots")
    if SPATIAL_KEY not in adata.obsm:
        raise SlideError(
            f"{where}: missing obsm['{SPATIAL_KEY}'] (spot coordinates in full-resolution pixels, shape (N, 2)); "
            "set adata.obsm['spatial'] = coords"
        )
    coords = np.asarray(adata.obsm[SPATIAL_KEY])
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise SlideError(f"{where}: obsm['{SPATIAL_KEY}'] must have shape (N, 2), got {coords.shape}")
    if not np.issubdtype(coords.dtype, np.number) or not np.isfinite(coords).all():
        raise SlideError(f"{where}: obsm['{SPATIAL_KEY}'] contains non-finite or non-numeric values; drop those spots")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise SlideError(f"{where}: spot barcodes (obs_names) are not unique, e.g. {dup}; call adata.obs_names_make_unique()")
    if feature_key is not None:
        if feature_key not in adata.obsm:
            raise SlideError(
                f"{where}: missing obsm['{feature_key}'] (patch embeddings, shape (N, F)); run `stgen extract` "
                "or set data.feature_key to the key that holds them"
            )
        feats = np.asarray(adata.obsm[feature_key])
        if feats.ndim != 2 or feats.shape[0] != n:
            raise SlideError(f"{where}: obsm['{feature_key}'] must have shape ({n}, F), got {feats.shape}")
        if not np.isfinite(feats).all():
            raise SlideError(f"{where}: obsm['{feature_key}'] contains NaN or inf; re-extract the features")
    if require_counts:
        X = adata.X
        if X is None or adata.n_vars == 0:
            raise SlideError(f"{where}: X holds no expression; training and evaluation need raw counts in X")
        data = X.data if sp.issparse(X) else np.asarray(X)
        if data.size and (not np.isfinite(data).all() or data.min() < 0):
            raise SlideError(
                f"{where}: X must hold raw, non-negative counts; found negative or non-finite values "
                "(if X is log-normalised, put the raw counts back in X, e.g. from adata.layers['counts'] or adata.raw)"
            )
        if genes is not None:
            missing = [g for g in genes if g not in adata.var_names]
            if missing:
                raise SlideError(
                    f"{where}: {len(missing)} gene(s) of the panel are missing from var_names, e.g. {missing[:5]}; "
                    "choose a panel present in every slide"
                )
