"""Slide readers: pyramidal TIFF-family whole-slide images (tiffslide) and plain images (Pillow).

Every reader exposes level-0 size, pyramid levels with their downsample factors, the resolution in
micrometres per level-0 pixel (``mpp``) and region reads in level pixels. The base class owns the
invariants: regions partly outside the image are padded (white glass by default), the resolution is
known (from the file's metadata or given), and low-resolution overviews are read in tiles so memory
does not grow with the slide.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stgen.errors import DataInputError

#: largest image Pillow may decode here (plain images are decoded whole)
MAX_PLAIN_PIXELS = 2_000_000_000


class SlideError(DataInputError):
    """A slide cannot be read as asked (message names the file and the fix)."""


class SlideReader(ABC):
    """Base class of a slide reader.

    Subclasses implement :meth:`_read` (a region fully inside one level) and fill ``level_dimensions``,
    ``level_downsamples`` and ``mpp`` (level-0 micrometres per pixel, None when the file does not say).

    Args:
        path: the image file.
        mpp: micrometres per level-0 pixel; overrides the file's metadata (required when it has none).

    Shapes:
        :meth:`read_region` -> ``[h, w, 3]`` uint8 RGB.
    """

    #: file suffixes the reader handles (lower case, with the dot)
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: whether the file can carry its resolution (plain images cannot be trusted to)
    has_metadata_mpp: ClassVar[bool] = True

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideError(f"slide {str(self.path)!r} does not exist")
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise SlideError(f"slide {self.path.name}: --mpp must be a positive number of micrometres per pixel, got {mpp}")
        self.level_dimensions: list[tuple[int, int]] = []
        self.level_downsamples: list[float] = []
        self.metadata_mpp: float | None = None
        self._given_mpp = mpp

    # -- properties -----------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        """Micrometres per level-0 pixel (given, else from the file's metadata)."""
        mpp = self._given_mpp if self._given_mpp is not None else self.metadata_mpp
        if mpp is None:
            raise SlideError(
                f"slide {str(self.path)!r}: the file does not record its resolution (microns per pixel); pass it "
                "with --mpp (e.g. --mpp 0.5 for a 20x scan, 0.25 for 40x)"
            )
        return float(mpp)

    @property
    def mpp_source(self) -> str:
        return "given (--mpp)" if self._given_mpp is not None else "file metadata"

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    # -- reading ----------------------------------------------------------------------------------
    @abstractmethod
    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``[h, w, 3]`` uint8 of a region inside level ``level`` (level pixels, top-left ``x, y``)."""

    def read_region(self, level: int, x: int, y: int, w: int, h: int, pad_value: int = 255) -> np.ndarray:
        """A region of level ``level`` (level pixels), padded with ``pad_value`` where it leaves the image."""
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if (x0, y0, x1, y1) == (x, y, x + w, y + h):
            return self._read(level, x, y, w, h)
        out = np.full((h, w, 3), pad_value, dtype=np.uint8)
        if x0 < x1 and y0 < y1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def overview(self, max_side: int = 2048, tile: int = 4096) -> tuple[np.ndarray, float]:
        """The whole slide at low resolution, read in tiles (memory bounded by the result).

        Uses the coarsest pyramid level at least ``max_side`` pixels on its long side and reduces it by
        block averaging to at most ``max_side``.

        Returns:
            ``(image [H, W, 3] uint8, downsample)``: level-0 pixels per overview pixel (same in x and y).
        """
        level = 0
        for i, (w, h) in enumerate(self.level_dimensions):
            if max(w, h) >= max_side:
                level = i
        lw, lh = self.level_dimensions[level]
        factor = max(1, math.ceil(max(lw, lh) / max_side))
        ow, oh = lw // factor, lh // factor
        out = np.empty((oh, ow, 3), dtype=np.uint8)
        step = max(factor, (tile // factor) * factor)
        for ty in range(0, oh * factor, step):
            for tx in range(0, ow * factor, step):
                tw, th = min(step, ow * factor - tx), min(step, oh * factor - ty)
                region = self._read(level, tx, ty, tw, th).astype(np.float32)
                blocks = region.reshape(th // factor, factor, tw // factor, factor, 3).mean(axis=(1, 3))
                out[ty // factor : (ty + th) // factor, tx // factor : (tx + tw) // factor] = np.round(blocks)
        return out, float(self.level_downsamples[level]) * factor

    # -- identity, lifecycle --------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Content fingerprint: SHA-256 of the size and the first and last MiB of the file."""
        import hashlib

        size = self.path.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with self.path.open("rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for ``uns``)."""
        return {"path": str(self.path), "reader": type(self).__name__, "mpp": self.mpp, "mpp_source": self.mpp_source,
                "width": self.dimensions[0], "height": self.dimensions[1],
                "level_downsamples": [float(d) for d in self.level_downsamples]}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TiffSlideReader(SlideReader):
    """Pyramidal TIFF-family slides through ``tiffslide`` (Aperio SVS, Hamamatsu NDPI, OME-TIFF, generic
    tiled/pyramidal TIFF, ...). The handle opens lazily, so a reader can be sent to DataLoader workers.

    Args:
        path: the slide.
        mpp: overrides the resolution from the file (``tiffslide.mpp-x``, or the TIFF resolution tags).
    """

    suffixes = (".svs", ".tif", ".tiff", ".ndpi", ".btf", ".scn", ".bif")

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        self._slide: Any = None
        self._pid = os.getpid()
        slide = self._handle()
        self.level_dimensions = [tuple(int(v) for v in d) for d in slide.level_dimensions]
        self.level_downsamples = [float(d) for d in slide.level_downsamples]
        self.metadata_mpp = _tiff_mpp(slide, self.path)

    def _handle(self) -> Any:
        if self._pid != os.getpid():  # a forked DataLoader worker: never share the parent's file position
            self._slide, self._pid = None, os.getpid()
        if self._slide is None:
            try:
                import tiffslide
            except ImportError as exc:  # pragma: no cover - a core dependency
                raise ImportError("reading whole-slide images needs tiffslide: pip install tiffslide") from exc
            try:
                self._slide = tiffslide.TiffSlide(str(self.path))
            except Exception as exc:  # noqa: BLE001 - any parse failure becomes one clear error
                raise SlideError(f"slide {str(self.path)!r} cannot be read as a TIFF-family whole-slide image: {exc}") from exc
        return self._slide

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        # tiffslide takes the location in level-0 pixels and returns the stored pixels of the level
        loc = (int(round(x * ds)), int(round(y * ds)))
        arr = np.asarray(self._handle().read_region(loc, level, (w, h), as_array=True))
        if arr.shape[0] != h or arr.shape[1] != w:
            raise SlideError(f"slide {self.path.name}: read {arr.shape[:2]} instead of {(h, w)} at level {level}")
        return _rgb(arr)

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_slide"] = None
        return state


class PillowReader(SlideReader):
    """A plain image (JPEG, PNG, ...) decoded whole with Pillow; one level; the resolution must be given.

    Args:
        path: the image (or None with ``image=`` for an image already in memory).
        mpp: micrometres per pixel (required: plain images do not record it reliably).
        image: an opened ``PIL.Image`` to wrap instead of reading ``path``.
    """

    suffixes = (".jpg", ".jpeg", ".png")
    has_metadata_mpp = False

    def __init__(self, path: str | Path | None = None, mpp: float | None = None, image: Any = None) -> None:
        from PIL import Image

        if image is None:
            super().__init__(path, mpp)  # type: ignore[arg-type]
            if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PLAIN_PIXELS:
                Image.MAX_IMAGE_PIXELS = MAX_PLAIN_PIXELS
            try:
                with Image.open(self.path) as im:
                    image = im.convert("RGB")
            except Exception as exc:  # noqa: BLE001
                raise SlideError(f"image {str(self.path)!r} cannot be read: {exc}") from exc
        else:
            self.path = Path(path or "<in memory>")
            self.level_dimensions, self.level_downsamples, self.metadata_mpp = [], [], None
            self._given_mpp = mpp
            image = image if image.mode == "RGB" else image.convert("RGB")
        self.image = image
        self.level_dimensions = [tuple(image.size)]
        self.level_downsamples = [1.0]

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self.image.crop((x, y, x + w, y + h)), dtype=np.uint8)

    def fingerprint(self) -> str:
        if not self.path.is_file():
            import hashlib

            return hashlib.sha256(self.image.tobytes()).hexdigest()
        return super().fingerprint()


#: reader per file suffix (OME-TIFF ends in .tif/.tiff)
READERS: dict[str, type[SlideReader]] = {s: cls for cls in (TiffSlideReader, PillowReader) for s in cls.suffixes}


def open_slide(path: str | Path, mpp: float | None = None) -> SlideReader:
    """Open a whole-slide image or plain image with the reader for its suffix; checks the resolution.

    Raises:
        SlideError: unknown format, unreadable file, or no resolution in the file and no ``mpp`` given.
    """
    path = Path(path)
    cls = READERS.get(path.suffix.lower())
    if cls is None:
        raise SlideError(
            f"slide {str(path)!r}: unsupported format {path.suffix!r}; supported: {', '.join(sorted(READERS))} "
            "(convert other formats to a pyramidal TIFF, e.g. with `vips tiffsave --tile --pyramid`)"
        )
    reader = cls(path, mpp=mpp)
    reader.mpp  # noqa: B018 - raises the --mpp error now, before any work
    return reader


def _rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = np.round(arr[..., :3] * alpha + 255.0 * (1 - alpha))  # transparent = white glass
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _tiff_mpp(slide: Any, path: Path) -> float | None:
    """Level-0 microns per pixel from tiffslide's properties, else from the TIFF resolution tags."""
    props = slide.properties
    mpp = props.get("tiffslide.mpp-x")
    if mpp:
        return float(mpp)
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        if tif.is_ome and tif.ome_metadata:
            ome = _ome_mpp(tif.ome_metadata)
            if ome is not None:
                return ome
        page = tif.pages[0]
        tags = page.tags
        res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
        if res is None or unit is None:
            return None
        num, den = res.value
        unit = int(unit.value)
        if num == 0 or unit not in (2, 3):  # 2 inch, 3 centimetre; 1 = no absolute unit
            return None
        per_unit = num / den
        um = 25400.0 if unit == 2 else 10000.0
        value = um / per_unit
        # 72 or 96 dpi is a screen default, not a scan resolution
        return None if unit == 2 and per_unit in (72.0, 96.0) else float(value)


#: OME length units in micrometres
_OME_UNITS = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _ome_mpp(xml: str) -> float | None:
    """``PhysicalSizeX`` of the first OME ``Pixels`` element, in micrometres."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
            unit = _OME_UNITS.get(el.get("PhysicalSizeXUnit", "µm"))
            return float(el.get("PhysicalSizeX")) * unit if unit else None
    return None
