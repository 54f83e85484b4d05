"""What prediction on an image needs from the checkpoint (and what the user may override)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stgen.data.spec import LAYOUTS, DataSpec, FeatureSpec
from stgen.errors import ConfigInputError

#: HEST's patch convention, assumed for checkpoints that do not record their patch size
DEFAULT_PATCH_UM = 112.0
DEFAULT_PATCH_PX = 224


class MissingBackendError(ConfigInputError):
    """The checkpoint does not say which feature backend made its training embeddings."""


@dataclass(frozen=True)
class ImageSettings:
    """How a checkpoint is applied to an image.

    Args:
        features: the feature backend (from the checkpoint, or given for checkpoints without one).
        patch_um: patch side in micrometres.
        patch_px: patch side in pixels fed to the backend.
        spacing_um: spot spacing of the virtual lattice (None: only given spots can be predicted).
        layout: ``"square"`` or ``"hex"`` (None: only given spots).
        notes: where each value came from.
    """

    features: FeatureSpec
    patch_um: float
    patch_px: int
    spacing_um: float | None
    layout: str | None
    notes: dict[str, str] = field(default_factory=dict)


def resolve_settings(data_spec: Mapping[str, Any] | None, *, checkpoint: str = "the checkpoint",
                     features: str | None = None, feature_params: Mapping[str, Any] | None = None,
                     patch_um: float | None = None, spacing_um: float | None = None,
                     layout: str | None = None) -> ImageSettings:
    """Settings from the checkpoint's ``data_spec`` with user overrides.

    The feature backend can only be given for checkpoints that do not record one (a different backend
    than the training one would give meaningless predictions); spacing and layout can always be
    overridden.

    Raises:
        MissingBackendError: no backend recorded and none given (the message says how to give one).
        ValueError: a given backend contradicts the recorded one, or a bad layout/spacing.
    """
    from stgen.data.hest_cache import canonical_backend_params

    spec = DataSpec.from_dict(data_spec)
    notes: dict[str, str] = {}
    if spec.features is None:
        if features is None:
            raise MissingBackendError(
                f"{checkpoint} does not record the feature backend its training embeddings were made with (it "
                "predates backend recording, or it was trained on embeddings computed elsewhere); pass that backend "
                "explicitly: `stgen predict ... --features efficientnet_lite0` (Python: features='efficientnet_lite0'), "
                "with --feature-param key=value for non-default parameters and --patch-um if the patches were not "
                f"{DEFAULT_PATCH_UM:g} um"
            )
        feats = FeatureSpec(name=features, params=canonical_backend_params(features, feature_params),
                            normalization=str((feature_params or {}).get("normalization", "none")))
        notes["features"] = "given (the checkpoint records none)"
    else:
        feats = spec.features
        if features is not None and features != feats.name:
            raise ConfigInputError(
                f"{checkpoint} was trained on {feats.name!r} embeddings; --features {features} would give features "
                f"the model never saw. Drop --features (the recorded backend is used)"
            )
        if feature_params:
            raise ConfigInputError(f"{checkpoint} records the parameters of its feature backend {feats.name!r}; "
                             "drop --feature-param")
        notes["features"] = "checkpoint"
    p_um = patch_um if patch_um is not None else spec.patch_um
    notes["patch_um"] = "given" if patch_um is not None else ("checkpoint" if spec.patch_um else "HEST default")
    p_um = float(p_um or DEFAULT_PATCH_UM)
    p_px = int(spec.patch_px or DEFAULT_PATCH_PX)
    if not p_um > 0:
        raise ConfigInputError(f"--patch-um must be positive, got {p_um}")
    spacing = spacing_um if spacing_um is not None else spec.spot_spacing_um
    notes["spacing_um"] = "given" if spacing_um is not None else ("checkpoint" if spacing else "unknown")
    if spacing is not None and not spacing > 0:
        raise ConfigInputError(f"--spacing-um must be positive, got {spacing}")
    lay = layout if layout is not None else spec.layout
    notes["layout"] = "given" if layout is not None else ("checkpoint" if lay else "unknown")
    if lay is not None and lay not in LAYOUTS:
        raise ConfigInputError(f"--layout must be one of {', '.join(LAYOUTS)}, got {lay!r}")
    return ImageSettings(features=feats, patch_um=p_um, patch_px=p_px,
                         spacing_um=None if spacing is None else float(spacing), layout=lay, notes=notes)
