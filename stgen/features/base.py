"""The feature-extractor contract: uint8 image patches in, one float32 embedding per patch out."""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stgen.components import Configurable
from stgen.data.spec import FeatureSpec
from stgen.registry import FEATURES

PRECISIONS = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


class FeatureExtractor(Configurable, ABC):
    """Base class of every patch-embedding backend.

    Subclasses implement one hook, :meth:`embed`, and set :attr:`dim`. The base class owns the
    invariants: input validation (uint8, ``[B, H, W, 3]``), batching, device placement, ``torch.no_grad``,
    optional CUDA autocast and the output check (float32 ``[B, dim]`` on the CPU).

    Every constructor parameter must have a default (it becomes a config key) and be stored as an
    attribute of the same name, so :meth:`get_params` can report the configuration that produced a set
    of embeddings (used to key embedding caches).

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: patches per forward pass.
        precision: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"auto"``; reduced precision is an
            autocast on CUDA only (CPU always computes in float32).

    Shapes:
        images: ``[B, H, W, 3]`` uint8 (numpy or torch) -> ``[B, dim]`` float32 CPU tensor.
        embed: ``[b, 3, H, W]`` float32 in ``[0, 1]`` on :attr:`device` -> ``[b, dim]``.
    """

    #: embedding width F
    dim: int = 0

    def __init__(self, device: str = "auto", batch_size: int = 64, precision: str = "float32") -> None:
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        if precision not in PRECISIONS:
            raise ValueError(
                f"{type(self).__name__}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self._device = resolve_device(device)

    # -- configuration ------------------------------------------------------------------------
    @property
    def torch_device(self) -> torch.device:
        """The resolved :class:`torch.device` the backend computes on."""
        return self._device

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters of this instance (``{name: value}``), read from same-named attributes."""
        return {p.name: getattr(self, p.name, p.default) for p in self.params()}

    def weights_file(self) -> Path | None:
        """The weights file this instance loaded (None for a weight-free backend).

        The default reads a ``weights`` parameter; backends with packaged weights override it.
        """
        weights = getattr(self, "weights", "")
        return Path(weights).expanduser() if weights else None

    def feature_spec(self, name: str | None = None) -> FeatureSpec:
        """What produced this instance's embeddings: registry name, parameters, weights fingerprint.

        Recorded in checkpoints (``data_spec["features"]``) so prediction on new images rebuilds exactly
        this backend; :func:`build_from_spec` checks the weights fingerprint when it does.
        """
        from stgen.data.hest_cache import canonical_backend_params

        name = name or registered_name(type(self))
        params = canonical_backend_params(name, self.get_params())
        weights = self.weights_file()
        return FeatureSpec(name=name, params=params,
                           weights_sha256=file_sha256(weights) if weights is not None else None,
                           normalization=str(params.get("normalization", "none")))

    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype in effect (None: plain float32)."""
        if self._device.type != "cuda" or self.precision == "float32":
            return None
        if self.precision == "float16":
            return torch.float16
        if self.precision == "bfloat16":
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype()
        if dtype is None:
            if self.precision in ("float16", "bfloat16") and self._device.type != "cuda":
                warnings.warn(
                    f"{type(self).__name__}: precision={self.precision!r} applies on CUDA only; "
                    "computing in float32 on the CPU",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=dtype)

    # -- the contract -------------------------------------------------------------------------
    @abstractmethod
    def embed(self, images: Tensor) -> Tensor:
        """Embeddings ``[b, dim]`` of float images ``[b, 3, H, W]`` in ``[0, 1]`` on :attr:`torch_device`."""

    def __call__(self, images: np.ndarray | Tensor) -> Tensor:
        x = _check_images(images, type(self).__name__)
        n = x.shape[0]
        if n == 0:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        out = []
        with torch.no_grad(), self._autocast():
            for start in range(0, n, self.batch_size):
                chunk = x[start : start + self.batch_size]
                chunk = chunk.to(self._device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
                emb = self.embed(chunk)
                if emb.shape != (chunk.shape[0], self.dim):
                    raise RuntimeError(
                        f"{type(self).__name__}.embed returned shape {tuple(emb.shape)}, expected "
                        f"({chunk.shape[0]}, {self.dim})"
                    )
                out.append(emb.float().cpu())
        return torch.cat(out)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _check_images(images: np.ndarray | Tensor, who: str) -> Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise TypeError(
                f"{who}: images must be uint8 (0-255 RGB), got dtype {images.dtype}; "
                "convert with (img * 255).round().astype(np.uint8) if they are floats in [0, 1]"
            )
        t = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, Tensor):
        if images.dtype != torch.uint8:
            raise TypeError(f"{who}: images must be a uint8 tensor (0-255 RGB), got dtype {images.dtype}")
        t = images
    else:
        raise TypeError(f"{who}: images must be a numpy array or torch tensor, got {type(images).__name__}")
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(
            f"{who}: images must have shape [B, H, W, 3] (channels last, RGB), got {tuple(t.shape)}; "
            "add a batch axis with images[None] for a single patch"
        )
    return t


def _iter_batches(images: Any, batch_size: int) -> tuple[int | None, Iterator[np.ndarray | Tensor], Any]:
    """(number of patches if known, iterator of uint8 batches, file handle to close or None)."""
    handle = None
    if isinstance(images, (str, Path)):
        import h5py

        handle = h5py.File(images, "r")
        if "img" not in handle:
            handle.close()
            raise ValueError(
                f"{images}: no dataset 'img' (expected HEST patches with img (N, H, W, 3) uint8)"
            )
        images = handle["img"]
    if isinstance(images, (np.ndarray, Tensor)) or _is_h5_dataset(images):
        n = int(images.shape[0])

        def gen() -> Iterator[np.ndarray | Tensor]:
            for start in range(0, n, batch_size):
                chunk = images[start : start + batch_size]
                yield chunk if isinstance(chunk, Tensor) else np.asarray(chunk)

        return n, gen(), handle
    if isinstance(images, Iterable):

        def gen_iter() -> Iterator[np.ndarray]:
            buf: list[np.ndarray] = []
            count = 0
            for item in images:
                arr = item.cpu().numpy() if isinstance(item, Tensor) else np.asarray(item)
                if arr.ndim == 3:
                    buf.append(arr[None])
                    count += 1
                    if count >= batch_size:
                        yield np.concatenate(buf)
                        buf, count = [], 0
                else:
                    if buf:
                        yield np.concatenate(buf)
                        buf, count = [], 0
                    yield arr
            if buf:
                yield np.concatenate(buf)

        return None, gen_iter(), handle
    raise TypeError(
        f"images must be an array [N, H, W, 3], an h5py dataset, a path to a HEST patches .h5 file or an "
        f"iterable of patches/batches; got {type(images).__name__}"
    )


def _is_h5_dataset(obj: Any) -> bool:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a core dependency
        return False
    return isinstance(obj, h5py.Dataset)


def extract_embeddings(
    extractor: FeatureExtractor,
    images: np.ndarray | Tensor | Iterable | str | Path,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str = "embedding patches",
) -> np.ndarray:
    """Embed every patch of ``images`` with ``extractor``, reading them one batch at a time.

    Args:
        extractor: any :class:`FeatureExtractor`.
        images: an array or tensor ``[N, H, W, 3]`` uint8, an ``h5py.Dataset`` (read lazily), a path to
            a HEST patches ``.h5`` file (its ``img`` dataset), or an iterable of single patches
            ``[H, W, 3]`` and/or batches ``[b, H, W, 3]``.
        batch_size: patches read per step (default: the extractor's ``batch_size``).
        progress: show a tqdm progress bar (counted in patches).
        desc: progress-bar label.

    Returns:
        ``[N, extractor.dim]`` float32 numpy array, in input order.
    """
    bs = int(batch_size or extractor.batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    from tqdm.auto import tqdm

    total, batches, handle = _iter_batches(images, bs)
    out: list[np.ndarray] = []
    try:
        with tqdm(total=total, desc=desc, unit="patch", disable=not progress, leave=False) as bar:
            for batch in batches:
                emb = extractor(batch)
                out.append(emb.numpy())
                bar.update(len(emb))
    finally:
        if handle is not None:
            handle.close()
    if not out:
        return np.zeros((0, extractor.dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (memoised per path, size and modification time)."""
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), int(st.st_size), int(st.st_mtime_ns))
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def registered_name(cls: type) -> str:
    """The registry name of a backend class (its class name when it is not registered)."""
    return next((e.name for e in FEATURES.entries() if e.obj is cls), cls.__name__)


def build_from_spec(spec: FeatureSpec, *, device: str = "auto", batch_size: int = 64) -> FeatureExtractor:
    """Rebuild the backend a checkpoint records and check it is the same one (weights fingerprint).

    Raises:
        ValueError: the weights file found here differs from the one the embeddings were made with.
    """
    cls = FEATURES.get(spec.name)
    allowed = {p.name for p in cls.params()}
    params = {k: v for k, v in spec.params.items() if k in allowed}
    extractor = cls(**params, **{k: v for k, v in (("device", device), ("batch_size", batch_size)) if k in allowed})
    weights = extractor.weights_file()
    if spec.weights_sha256 is not None:
        found = file_sha256(weights) if weights is not None else None
        if found != spec.weights_sha256:
            raise ValueError(
                f"feature backend {spec.name!r}: the model was trained on embeddings from weights with SHA-256 "
                f"{spec.weights_sha256[:12]}..., but {weights} has {str(found)[:12]}...; give the same weights file "
                "(features.weights=...) the training data was embedded with"
            )
    return extractor


FEATURES.set_base(FeatureExtractor)
