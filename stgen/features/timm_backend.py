"""Any timm model as a patch encoder, pretrained weights from a local file (UNI, GigaPath, ResNet50...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stgen.features.base import FeatureExtractor
from stgen.registry import FEATURES

INSTALL_HINT = "pip install 'stgen[timm]'"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TimmPreset:
    """A named architecture whose weights are distributed outside timm's registry.

    Args:
        arch: timm model name.
        kwargs: extra ``timm.create_model`` arguments the checkpoint needs.
        normalization: the input normalisation the model was trained with.
    """

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    normalization: str = "auto"


#: ``model=`` shortcuts; the weights file still comes from the user (e.g. UNI's ``pytorch_model.bin``)
PRESETS: dict[str, TimmPreset] = {
    "uni": TimmPreset(
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        "imagenet",
    ),
}

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint (``.safetensors``, or ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` via ``torch.load``).

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and a ``module.`` prefix on every key
    (DataParallel/DDP checkpoints) are removed. Only tensors are loaded (``weights_only=True``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - rethrown with the file name and the fix
            raise RuntimeError(
                f"could not read weights file {str(path)!r} with torch.load(weights_only=True): {exc}. "
                "Give a state dict saved with torch.save(model.state_dict(), path) or a .safetensors file"
            ) from exc
    for _ in range(3):
        if isinstance(state, dict):
            inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, Tensor) for v in state.values()):
                state = inner
                continue
        break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise RuntimeError(f"weights file {str(path)!r} does not hold a state dict (name -> tensor)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _classifier_prefixes(net: nn.Module) -> tuple[str, ...]:
    cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
    cls = cfg.get("classifier", ("head", "fc", "classifier"))
    names = (cls,) if isinstance(cls, str) else tuple(cls)
    return tuple(f"{n}." for n in names)


def load_weights_strict(net: nn.Module, state: dict[str, Tensor], source: str) -> list[str]:
    """Load ``state`` into ``net`` and raise one clear error on any mismatch.

    Classifier weights (timm's ``pretrained_cfg["classifier"]``, e.g. ``head.*`` or ``fc.*``) that the
    headless model (``num_classes=0``) does not have are ignored and returned; every other missing,
    unexpected or wrongly shaped key is an error that lists them.
    """
    own = net.state_dict()
    prefixes = _classifier_prefixes(net)
    ignored = [k for k in state if k not in own and k.startswith(prefixes)]
    state = {k: v for k, v in state.items() if k not in ignored}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing key(s): {', '.join(missing[:10])}"
                f"{' ...' if len(missing) > 10 else ''}"
            )
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:10])}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
        if shape:
            parts.append(f"{len(shape)} shape mismatch(es): {'; '.join(shape[:5])}")
        raise RuntimeError(
            f"weights {source} do not fit the model: "
            + "; ".join(parts)
            + ". Check that `model` names the architecture the weights were trained with (and "
            "`model_kwargs`, e.g. init_values=1e-5 for UNI, or model='uni')"
        )
    net.load_state_dict(state, strict=True)
    return ignored


@FEATURES.register("timm")
class TimmFeatures(FeatureExtractor):
    """Pooled features of any timm model, with weights from a local file (never downloaded).

    The model is built with ``timm.create_model(model, pretrained=False, num_classes=0)`` (the
    classifier is replaced by the model's own pooling, e.g. the class token of a ViT or global average
    pooling of a ResNet) and the weights are loaded strictly from ``weights``. Patches are resized whole
    (no centre crop) to ``img_size`` with the interpolation of timm's data config and normalised with its
    mean/std (``timm.data.resolve_data_config``), unless ``normalization`` overrides them.

    Pathology foundation models are used the same way, e.g. UNI:
    ``model=uni weights=/path/to/uni/pytorch_model.bin`` (``uni`` is a preset for
    ``vit_large_patch16_224`` with ``init_values=1e-5`` and ImageNet normalisation).

    Args:
        model: timm model name, or a preset of :data:`PRESETS`.
        weights: local weights file (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``).
        img_size: side of the square network input.
        precision: ``"auto"`` (bfloat16 autocast on CUDA when supported, else float16; float32 on the
            CPU), ``"float32"``, ``"float16"`` or ``"bfloat16"`` (the last two on CUDA only).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: patches per forward pass.
        random_init: allow ``weights=""`` and keep the random initialisation (tests, ablations).
        normalization: ``"auto"`` (timm's data config, or the preset's), ``"imagenet"`` or
            ``"inception"`` (mean = std = 0.5).
        global_pool: timm pooling override (``""``: the model's default; e.g. ``"avg"``, ``"token"``).
        model_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"init_values": 1e-5}``).

    Shapes:
        ``[B, H, W, 3]`` uint8 -> ``[B, dim]`` float32, ``dim`` = the model's pooled feature width.
    """

    def __init__(
        self,
        model: str = "vit_base_patch16_224",
        weights: str = "",
        img_size: int = 224,
        precision: str = "auto",
        device: str = "auto",
        batch_size: int = 64,
        random_init: bool = False,
        normalization: str = "auto",
        global_pool: str = "",
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size, precision=precision)
        if normalization not in ("auto", "imagenet", "inception"):
            raise ValueError(
                f"timm: normalization must be 'auto', 'imagenet' or 'inception', got {normalization!r}"
            )
        self.model = model
        self.weights = weights
        self.img_size = int(img_size)
        self.random_init = bool(random_init)
        self.normalization = normalization
        self.global_pool = global_pool
        self.model_kwargs = dict(model_kwargs or {})
        if not weights and not random_init:
            raise ValueError(
                f"timm feature backend ({model!r}): pretrained weights must be given as a local file, e.g. "
                "features.weights=/path/to/uni/pytorch_model.bin for UNI (.pth, .bin or .safetensors); "
                "nothing is downloaded. Set features.random_init=true to use random weights on purpose"
            )
        path: Path | None = None
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"timm feature backend: weights file {str(path)!r} does not exist")
        try:
            import timm
            from timm.data import resolve_data_config
        except ImportError as exc:
            raise ImportError(
                f"the timm feature backend needs timm; install it with: {INSTALL_HINT}"
            ) from exc

        preset = PRESETS.get(model)
        arch = preset.arch if preset else model
        kwargs: dict[str, Any] = {**(preset.kwargs if preset else {}), **self.model_kwargs}
        if global_pool:
            kwargs["global_pool"] = global_pool
        try:
            net = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                import difflib

                close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(
                    f"timm feature backend: unknown timm model {arch!r}.{hint} (see timm.list_models())"
                ) from exc
            raise
        self.ignored_keys: list[str] = []
        if path is not None:
            self.ignored_keys = load_weights_strict(net, load_state_dict_file(path), repr(str(path)))

        cfg = resolve_data_config(model=net)
        norm = normalization
        if norm == "auto" and preset is not None:
            norm = preset.normalization
        if norm == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif norm == "inception":
            mean, std = INCEPTION_MEAN, INCEPTION_STD
        else:
            mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        interp = str(cfg.get("interpolation", "bilinear"))
        self.interpolation = interp if interp in ("bilinear", "bicubic") else "bilinear"
        self.dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
        self.net = net.eval().to(self.torch_device)
        self._mean = torch.tensor(self.mean, device=self.torch_device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.torch_device).view(1, 3, 1, 1)

    def embed(self, images: Tensor) -> Tensor:
        x = images
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(
                x,
                size=(self.img_size, self.img_size),
                mode=self.interpolation,
                antialias=True,
                align_corners=False,
            ).clamp_(0.0, 1.0)
        x = (x - self._mean) / self._std
        out = self.net(x)
        if out.ndim != 2:
            out = out.flatten(1)
        return out
