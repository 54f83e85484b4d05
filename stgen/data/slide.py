"""The Slide contract: one AnnData per slide, and the one function that validates it."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from stgen.errors import DataInputError

SPATIAL_KEY = "spatial"
FEATURE_KEY = "features"
UNS_KEY = "stgen"
#: layers of a predicted slide: predicted expression (mean over samples) and its spread over samples
MEAN_LAYER = "stgen_mean"
STD_LAYER = "stgen_std"


class SlideError(DataInputError):
    """A slide that does not satisfy the Slide contract (message names slide, field and fix)."""


#: smallest ratio (smallest singular value / largest) of the centred coordinates of a 2-D layout
COLLINEAR_RTOL = 1e-6
#: largest ratio of a slide's extent to its smallest spot spacing that float32 positions resolve
MAX_EXTENT_OVER_SPACING = 1e6


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
    if n < 3:
        raise SlideError(f"{where}: has {n} spot(s); a slide needs at least 3 spots (not all on one line)")
    if SPATIAL_KEY not in adata.obsm:
        raise SlideError(
            f"{where}: missing obsm['{SPATIAL_KEY}'] (spot coordinates in full-resolution pixels, shape (N, 2)); "
            "set adata.obsm['spatial'] = coords"
        )
    coords = np.asarray(adata.obsm[SPATIAL_KEY])
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise SlideError(f"{where}: obsm['{SPATIAL_KEY}'] must have shape (N, 2), got {coords.shape}")
    if not np.issubdtype(coords.dtype, np.number) or np.issubdtype(coords.dtype, np.complexfloating):
        example = coords.ravel()[:2].tolist()
        raise SlideError(
            f"{where}: obsm['{SPATIAL_KEY}'] holds {coords.dtype} values (e.g. {example}), not numbers; convert "
            f"them, e.g. adata.obsm['{SPATIAL_KEY}'] = np.asarray(adata.obsm['{SPATIAL_KEY}'], dtype=float) "
            "(strings such as '12.5' parse; fix the reader that wrote them otherwise)"
        )
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise SlideError(
            f"{where}: {int(bad.sum())} spot(s) have NaN or infinite coordinates in obsm['{SPATIAL_KEY}'] "
            f"(e.g. {adata.obs_names[bad][:3].tolist()}); fix their coordinates or remove those spots, e.g. "
            f"adata = adata[np.isfinite(adata.obsm['{SPATIAL_KEY}']).all(1)].copy()"
        )
    check_layout(coords, where, adata.obs_names)
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise SlideError(f"{where}: spot barcodes (obs_names) are not unique, e.g. {dup}; call adata.obs_names_make_unique()")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        raise SlideError(
            f"{where}: gene names (var_names) are not unique, e.g. {dup}; sum or drop the duplicated genes "
            "(or call adata.var_names_make_unique())"
        )
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


def check_layout(coords: np.ndarray, where: str = "slide", barcodes: Sequence[str] | None = None) -> None:
    """Refuse spot layouts the graph and the frames cannot use (finite ``[N, 2]`` coordinates assumed).

    Refused: every spot at one position, all spots on one line, two spots at the same position, and an
    extent so large relative to the smallest spot spacing that float32 positions cannot tell spots apart.
    O(N log N) (a k-d tree query), never N x N.
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(coords, dtype=np.float64)
    n = len(xy)
    centred = xy - xy.mean(axis=0)
    extent = float(np.abs(centred).max()) if n else 0.0
    if extent == 0.0:
        raise SlideError(
            f"{where}: all {n} spots share one position {xy[0].tolist()} in obsm['{SPATIAL_KEY}']; each spot "
            "needs its own coordinates (full-resolution pixels): check the column that holds them"
        )
    dist, idx = cKDTree(xy).query(xy, k=2)
    nearest = dist[:, 1]
    if (nearest == 0).any():
        i = int(np.flatnonzero(nearest == 0)[0])
        j = int(idx[i, 1])
        names = (barcodes[i], barcodes[j]) if barcodes is not None else (i, j)
        n_dup = int((nearest == 0).sum())
        raise SlideError(
            f"{where}: {n_dup} spots share their position with another spot, e.g. {names[0]!r} and "
            f"{names[1]!r} at {xy[i].tolist()}; remove or merge the duplicated spots"
        )
    ratio = extent / float(nearest.min())
    if ratio > MAX_EXTENT_OVER_SPACING:
        raise SlideError(
            f"{where}: the slide spans {extent:.3g} units but its closest spots are {nearest.min():.3g} apart "
            f"(ratio {ratio:.2g} > {MAX_EXTENT_OVER_SPACING:.0g}); positions cannot be resolved: check the "
            "coordinate units, or remove the far-away outlier spots"
        )
    sv = np.linalg.svd(centred / extent, compute_uv=False)
    if sv[-1] <= COLLINEAR_RTOL * sv[0]:
        raise SlideError(
            f"{where}: all {n} spots lie on one line in obsm['{SPATIAL_KEY}']; a slide needs a 2-D layout "
            "(check that x and y are two different columns)"
        )
