"""Fast hand-crafted stain and texture statistics (no weights, no download, any patch size)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stgen.features.base import FeatureExtractor
from stgen.registry import FEATURES

#: Ruifrok & Johnston (2001) stain vectors, rows = haematoxylin, eosin, DAB (skimage's ``rgb_from_hed``)
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

_QUANTILES = (0.1, 0.5, 0.9)
_INTENSITY_STATS = ("mean", "std", "p10", "p50", "p90")
_TEXTURE_STATS = ("grad_mean", "grad_std", "grad_p90", "lap_mean", "lap_std", "locvar_mean", "locvar_std")
_SCALES = (1, 2)


def _feature_names() -> tuple[str, ...]:
    names = [f"{ch}_{s}" for ch in ("r", "g", "b") for s in _INTENSITY_STATS]
    names += [f"{ch}_{s}" for ch in ("hema", "eosin", "dab") for s in _INTENSITY_STATS]
    names += [f"{t}_x{sc}" for sc in _SCALES for t in _TEXTURE_STATS]
    names += ["tissue_fraction", "hema_tissue_mean", "eosin_tissue_mean"]
    return tuple(names)


#: the meaning of every output column, in order
FEATURE_NAMES: tuple[str, ...] = _feature_names()


def _quantiles(x: Tensor, qs: tuple[float, ...]) -> Tensor:
    """Linear-interpolated quantiles along the last axis (numpy's default), ``[..., n] -> [..., len(qs)]``."""
    s = x.sort(dim=-1).values
    n = s.shape[-1]
    pos = torch.tensor(qs, device=x.device, dtype=x.dtype) * (n - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long().clamp(max=n - 1)
    w = pos - lo.to(x.dtype)
    return s[..., lo] * (1 - w) + s[..., hi] * w


def _subsample(x: Tensor) -> Tensor:
    """Every 4th pixel in each direction (every pixel for patches under 64 px), flattened: ``[..., n]``."""
    step = 4 if min(x.shape[-2:]) >= 64 else 1
    return x[..., ::step, ::step].reshape(*x.shape[:-2], -1)


def _channel_stats(x: Tensor) -> Tensor:
    """``[b, C, H, W] -> [b, C * 5]``: mean, std, p10, p50, p90 per channel."""
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    mean = flat.mean(-1)
    std = flat.std(-1, unbiased=False)
    q = _quantiles(_subsample(x), _QUANTILES)
    return torch.cat([mean[..., None], std[..., None], q], dim=-1).reshape(b, c * 5)


def _box3(p: Tensor) -> Tensor:
    """Sum over 3 x 3 windows of a padded image ``[..., H + 2, W + 2] -> [..., H, W]``."""
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _texture_stats(gray: Tensor) -> Tensor:
    """``[b, H, W] -> [b, 7]``: Sobel gradient magnitude, |Laplacian| and 3x3 local-variance summaries."""
    p = F.pad(gray[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = p[..., :, 2:] - p[..., :, :-2]
    dy = p[..., 2:, :] - p[..., :-2, :]
    gx = (dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]) / 8
    gy = (dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]) / 8
    grad = torch.sqrt(gx * gx + gy * gy)
    centre = p[..., 1:-1, 1:-1]
    lap = (p[..., 1:-1, :-2] + p[..., 1:-1, 2:] + p[..., :-2, 1:-1] + p[..., 2:, 1:-1] - 4 * centre).abs()
    m1 = _box3(p) / 9
    locvar = (_box3(p * p) / 9 - m1 * m1).clamp_min(0)
    grad_f, lap_f, var_f = grad.flatten(1), lap.flatten(1), locvar.flatten(1)
    g90 = _quantiles(_subsample(grad), (0.9,))[:, 0]
    return torch.stack(
        [
            grad_f.mean(1),
            grad_f.std(1, unbiased=False),
            g90,
            lap_f.mean(1),
            lap_f.std(1, unbiased=False),
            var_f.mean(1),
            var_f.std(1, unbiased=False),
        ],
        dim=1,
    )


@FEATURES.register("handcrafted")
class HandcraftedFeatures(FeatureExtractor):
    """Stain and texture statistics of each patch: a cheap, deterministic, weight-free baseline.

    Columns (:data:`FEATURE_NAMES`, ``dim = 47``), computed on RGB scaled to ``[0, 1]``:

    * 15 RGB intensity statistics: mean, std, 10th/50th/90th percentile of R, G, B;
    * 15 stain statistics of the same kind on the haematoxylin, eosin and DAB optical densities from
      Ruifrok-Johnston colour deconvolution (the same transform as ``skimage.color.rgb2hed``);
    * 14 texture statistics of the grey image at full and half resolution (2x2 average pooling): Sobel
      gradient magnitude mean/std/90th percentile, absolute Laplacian mean/std, and mean/std of the 3x3
      local variance;
    * tissue fraction (saturation > 0.07, brightness > 0.1, grey < 0.92: excludes white glass and
      blacked-out background) and the mean haematoxylin and eosin densities over the tissue pixels.

    Percentiles are taken on every 4th pixel in each direction when the patch is at least 64 px wide.

    Args:
        device: see :class:`~stgen.features.base.FeatureExtractor`.
        batch_size: patches per step.

    Shapes:
        ``[B, H, W, 3]`` uint8 (any ``H, W >= 4``) -> ``[B, 47]`` float32.
    """

    dim = len(FEATURE_NAMES)
    feature_names = FEATURE_NAMES

    def __init__(self, device: str = "auto", batch_size: int = 64) -> None:
        super().__init__(device=device, batch_size=batch_size)

    def embed(self, images: Tensor) -> Tensor:
        if min(images.shape[-2:]) < 4:
            raise ValueError(
                f"handcrafted: patches must be at least 4 x 4 px, got {tuple(images.shape[-2:])}"
            )
        x = images.float()
        conv = torch.as_tensor(HED_FROM_RGB, dtype=x.dtype, device=x.device)
        od = torch.log(x.clamp_min(1e-6)) / np.log(1e-6)
        hed = torch.einsum("bchw,cd->bdhw", od, conv).clamp_min(0)
        gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
        feats = [_channel_stats(x), _channel_stats(hed)]
        for scale in _SCALES:
            g = gray if scale == 1 else F.avg_pool2d(gray[:, None], scale)[:, 0]
            feats.append(_texture_stats(g))
        mx = x.amax(1)
        mn = x.amin(1)
        sat = (mx - mn) / mx.clamp_min(1e-6)
        tissue = ((sat > 0.07) & (mx > 0.1) & (gray < 0.92)).float()
        n_tissue = tissue.flatten(1).sum(1)
        frac = n_tissue / tissue[0].numel()
        denom = n_tissue.clamp_min(1.0)
        h_t = (hed[:, 0] * tissue).flatten(1).sum(1) / denom
        e_t = (hed[:, 1] * tissue).flatten(1).sum(1) / denom
        feats.append(torch.stack([frac, h_t, e_t], dim=1))
        return torch.cat(feats, dim=1)
