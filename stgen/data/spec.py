"""What a model needs to know about its training data to be applied to new images: the data spec.

A :class:`DataSpec` travels from the data source (``DataBundle.spec``) into the checkpoint (the
``data_spec`` hyperparameter of :class:`~stgen.lit.STGenLightning`) and from there into prediction on
whole-slide images: which feature backend made the embeddings (name, parameters, weights fingerprint),
the physical size of the patches it saw, and the spot lattice of the training slides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

LAYOUTS = ("square", "hex")


@dataclass(frozen=True)
class FeatureSpec:
    """The feature backend that produced a model's input embeddings.

    Args:
        name: registry name of the backend (``handcrafted``, ``efficientnet_lite0``, ``timm``, ...).
        params: its constructor parameters that change the embeddings (defaults filled in; device and
            batch size left out).
        weights_sha256: SHA-256 of the weights file the backend loaded (None for weight-free backends).
        normalization: the input normalisation of the backend (``params["normalization"]`` when it has
            one, else ``"none"``), recorded on its own so a reader does not need to know the backend.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    normalization: str = "none"


@dataclass(frozen=True)
class DataSpec:
    """Geometry and preprocessing of a model's training data (all plain data; stored in checkpoints).

    Args:
        features: the feature backend (None: embeddings of unknown origin, e.g. simulated or user-given).
        patch_um: side of the square patches the backend saw, in micrometres.
        patch_px: side of those patches in pixels (after resampling to ``patch_um / patch_px`` µm/px).
        spot_spacing_um: centre-to-centre distance of neighbouring spots, in micrometres.
        layout: ``"square"`` (legacy ST) or ``"hex"`` (Visium) spot lattice.
    """

    features: FeatureSpec | None = None
    patch_um: float | None = None
    patch_px: int | None = None
    spot_spacing_um: float | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for checkpoints and h5ad ``uns``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DataSpec:
        """The inverse of :meth:`to_dict`; None or ``{}`` gives an empty spec (nothing known)."""
        data = dict(data or {})
        feats = data.pop("features", None)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(features=FeatureSpec(**dict(feats)) if feats else None, **known)


def lattice_geometry(coords_px: np.ndarray, um_per_px: float) -> tuple[float, str]:
    """Spot spacing (µm) and layout (``"square"``/``"hex"``) of a set of spot centres.

    The spacing is the median distance between neighbouring spots (all pairs within 1.3 times the median
    nearest-neighbour distance: the nearest distance alone is biased low when positions are noisy, as
    measured spot positions are). The layout is read from how many neighbours a
    typical spot has within 1.25 spacings: 4 on a square lattice (the diagonal is at 1.41), 6 on a
    hexagonal one.

    Shapes:
        coords_px: ``[N, 2]`` spot centres in pixels of resolution ``um_per_px``.
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(coords_px, dtype=np.float64)
    if len(xy) < 3:
        raise ValueError(f"need at least 3 spots to measure a lattice, got {len(xy)}")
    tree = cKDTree(xy)
    dist, _ = tree.query(xy, k=2)
    nearest = float(np.median(dist[:, 1]))
    if nearest <= 0:
        raise ValueError("spots share positions; cannot measure the lattice spacing")
    pairs = tree.query_pairs(1.3 * nearest, output_type="ndarray")
    lengths = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1)
    spacing = float(np.median(lengths[lengths >= 0.7 * nearest]))
    counts = np.array([len(n) - 1 for n in tree.query_ball_point(xy, 1.25 * spacing)])
    typical = float(np.percentile(counts, 75))
    layout = "hex" if typical >= 5 else "square"
    return spacing * float(um_per_px), layout


def median_geometry(items: Sequence[tuple[float, str]]) -> tuple[float | None, str | None]:
    """One (spacing, layout) for several slides: median spacing, most common layout (None if empty)."""
    if not items:
        return None, None
    layouts = [lay for _, lay in items]
    return float(np.median([s for s, _ in items])), max(set(layouts), key=layouts.count)
