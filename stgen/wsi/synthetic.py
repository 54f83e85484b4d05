"""Small slides made in memory and written as real pyramidal TIFFs (tests, docs, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_pyramid(path: Path, img: np.ndarray, mpp: float | None, fmt: str = "tif",
                  factors: tuple[int, ...] = (1, 4)) -> Path:
    """Write ``img`` as a tiled pyramidal TIFF (``tif``: SubIFD levels + resolution tags; ``ome``: OME-TIFF with physical
    size; ``svs``: Aperio layout with MPP in the description)."""
    import tifffile

    levels = [np.ascontiguousarray(img[::f, ::f]) for f in factors]
    h, w = img.shape[:2]
    if fmt == "svs":
        head = "Aperio Image Library v12.0.15\r\n"
        mag = f"|AppMag = 20|MPP = {mpp}"
        with tifffile.TiffWriter(path) as tw:
            tw.write(levels[0], tile=(128, 128), photometric="rgb", compression="jpeg", metadata=None,
                     description=f"{head}{w}x{h} [0,0 {w}x{h}] (128x128) JPEG/RGB Q=90{mag}")
            thumb = np.ascontiguousarray(img[::16, ::16])
            tw.write(thumb, photometric="rgb", metadata=None, description=f"{head}{w}x{h} -> thumb{mag}")
            for lv in levels[1:]:
                tw.write(lv, tile=(128, 128), photometric="rgb", compression="jpeg", metadata=None,
                         description=f"{head}{w}x{h} -> {lv.shape[1]}x{lv.shape[0]}{mag}")
        return path
    kwargs = {}
    if fmt == "ome":
        meta = {"axes": "YXS", **({"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if mpp else {})}
        kwargs = {"metadata": meta}
    elif mpp:
        kwargs = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, ome=fmt == "ome") as tw:
        tw.write(levels[0], tile=(128, 128), photometric="rgb", compression="zlib", subifds=len(levels) - 1, **kwargs)
        for lv in levels[1:]:
            tw.write(lv, tile=(128, 128), photometric="rgb", compression="zlib", subfiletype=1)
    return path


def synthetic_slide(size: int = 1600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """White glass with a pink-purple tissue disc (textured), a round hole in it, and green, blue and black
    pen strokes. Returns ``(rgb, tissue_truth, ink)`` where ``tissue_truth`` excludes the hole and the ink."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    disc = (xx - c) ** 2 + (yy - c) ** 2 < (0.38 * size) ** 2
    hole = (xx - c * 1.2) ** 2 + (yy - c * 0.9) ** 2 < (0.08 * size) ** 2
    tissue = disc & ~hole
    img = np.full((size, size, 3), 242, dtype=np.float32)
    stain = np.array([205, 120, 175], dtype=np.float32) + rng.normal(0, 18, (size, size, 1))
    nuclei = rng.random((size, size)) < 0.05
    stain[nuclei] = [110, 60, 150]
    img[tissue] = stain[tissue]
    ink = np.zeros((size, size), dtype=bool)
    ink[int(0.05 * size):int(0.09 * size), int(0.1 * size):int(0.9 * size)] = True  # green, on glass
    ink[int(0.45 * size):int(0.49 * size), int(0.15 * size):int(0.55 * size)] = True  # blue, over the tissue
    green = ink & (yy < 0.2 * size)
    img[green] = [40, 150, 70]
    img[ink & ~green] = [35, 60, 170]
    black = (xx > 0.9 * size) & (xx < 0.93 * size) & (yy > 0.3 * size) & (yy < 0.7 * size)
    img[black] = [20, 20, 25]
    ink |= black
    return np.clip(img, 0, 255).astype(np.uint8), tissue & ~ink, ink
