from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from torch import Tensor

from stgen.data.hest import read_hest
from stgen.data.hest_cache import embedding_cache_path, ensure_embeddings
from stgen.data.hest_patches import Patches, read_patch_index, write_patches_h5
from stgen.data.slide import SlideError, validate_slide
from stgen.features.base import FeatureExtractor

N_SPOTS = 20
PATCH = 32
SAMPLES = {"S1": "P1", "S2": "P1", "S3": "P2", "S4": "P2"}
GENES = [f"G{i}" for i in range(12)]


def _write_sample(root: Path, sid: str, seed: int, expr_dir: str = "st") -> None:
    rng = np.random.default_rng(seed)
    barcodes = [f"{sid}_{i:02d}" for i in range(N_SPOTS)]
    counts = rng.poisson(3.0, size=(N_SPOTS, len(GENES))).astype(np.float32)
    expr = ad.AnnData(X=counts, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=GENES))
    expr.obs["in_tissue"] = 1
    (root / expr_dir).mkdir(parents=True, exist_ok=True)
    p_barcodes = list(barcodes)
    if sid == "S1":
        # one patch without expression, two expression spots without a patch
        p_barcodes = barcodes[2:] + ["S1_orphan"]
    coords = rng.uniform(0, 5000, size=(len(p_barcodes), 2))
    img = rng.integers(0, 256, size=(len(p_barcodes), PATCH, PATCH, 3), dtype=np.uint8)
    expr.write_h5ad(root / expr_dir / f"{sid}.h5ad")
    write_patches_h5(root / "patches" / f"{sid}.h5", Patches(img, coords, p_barcodes))


def make_hest_folder(root: Path, *, with_patient: bool = True, expr_dir: str = "st") -> Path:
    """A small HEST-Bench folder: 4 samples of 2 patients, leave-one-patient-out splits."""
    for i, sid in enumerate(SAMPLES):
        _write_sample(root, sid, seed=i, expr_dir=expr_dir)
    (root / "splits").mkdir()
    patients = sorted(set(SAMPLES.values()))
    for k, test_patient in enumerate(patients):
        for part, keep in (
            ("train", lambda p, tp=test_patient: p != tp),
            ("test", lambda p, tp=test_patient: p == tp),
        ):
            rows = [
                {
                    "sample_id": s,
                    "patches_path": f"patches/{s}.h5",
                    "expr_path": f"{expr_dir}/{s}.h5ad",
                    **({"patient": p} if with_patient else {}),
                }
                for s, p in SAMPLES.items()
                if keep(p)
            ]
            pd.DataFrame(rows).to_csv(root / "splits" / f"{part}_{k}.csv", index=False)
    (root / "var_50genes.json").write_text(json.dumps({"genes": GENES[:5]}))
    return root


class CountingExtractor(FeatureExtractor):
    """Mean colour per patch, scaled; counts how many patches it embedded."""

    dim = 3

    def __init__(self, scale: float = 1.0, device: str = "cpu", batch_size: int = 8) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.scale = scale
        self.calls = 0

    def embed(self, images: Tensor) -> Tensor:
        self.calls += images.shape[0]
        return images.mean(dim=(2, 3)) * self.scale


@pytest.fixture
def hest_root(tmp_path: Path) -> Path:
    return make_hest_folder(tmp_path / "task")


def test_read_hest_slides_folds_and_alignment(hest_root: Path) -> None:
    with pytest.warns(UserWarning, match="dropped 1 patch barcode.*2 expression spot"):
        ds = read_hest(hest_root)
    assert list(ds.slides) == ["S3", "S4", "S1", "S2"]
    assert ds.folds == [(["S3", "S4"], ["S1", "S2"]), (["S1", "S2"], ["S3", "S4"])]
    assert ds.genes == GENES[:5]
    rep = ds.alignment["S1"]
    assert (rep.n_spots, rep.patches_without_expression, rep.spots_without_patch) == (N_SPOTS - 2, 1, 2)
    assert ds.dropped == {"S3": 0, "S4": 0, "S1": 3, "S2": 0}
    s1 = ds.slides["S1"]
    assert s1.uns["stgen"]["hest"]["patches_without_expression"] == 1
    assert s1.uns["stgen"]["slide_id"] == "S1" and s1.uns["stgen"]["patient"] == "P1"
    validate_slide(s1, feature_key=None, genes=ds.genes)
    # expression rows follow the patch order, coordinates come from the patches file
    barcodes, coords = read_patch_index(hest_root / "patches" / "S1.h5")
    assert list(s1.obs_names) == barcodes[:-1]
    np.testing.assert_allclose(s1.obsm["spatial"], coords[:-1])
    expr = ad.read_h5ad(hest_root / "st" / "S1.h5ad")
    np.testing.assert_array_equal(s1.X, expr[barcodes[:-1]].X)
    assert s1.obs["in_tissue"].tolist() == [1] * (N_SPOTS - 2)
    assert ds.feature_key is None and "features" not in s1.obsm


def test_read_hest_one_fold_patient_fallback_and_adata_dir(tmp_path: Path) -> None:
    root = make_hest_folder(tmp_path / "t", with_patient=False, expr_dir="adata")
    with pytest.warns(UserWarning):
        ds = read_hest(root, task_fold=1)
    assert ds.folds == [(["S1", "S2"], ["S3", "S4"])]
    assert set(ds.slides) == set(SAMPLES)
    assert ds.slides["S3"].uns["stgen"]["patient"] == "S3"
    with pytest.raises(ValueError, match=r"no fold 5; available folds: \[0, 1\]"):
        read_hest(root, task_fold=5)


def test_read_hest_without_overlap_names_the_files(hest_root: Path) -> None:
    expr = ad.read_h5ad(hest_root / "st" / "S2.h5ad")
    expr.obs_names = [f"other_{i}" for i in range(expr.n_obs)]
    expr.write_h5ad(hest_root / "st" / "S2.h5ad")
    with pytest.raises(SlideError, match=r"S2\.h5.*S2\.h5ad"):
        read_hest(hest_root, samples=["S2"])


def test_embeddings_cached_reused_and_invalidated(hest_root: Path) -> None:
    made: list[CountingExtractor] = []

    def factory(scale: float = 1.0):
        def build() -> CountingExtractor:
            made.append(CountingExtractor(scale=scale))
            return made[-1]

        return build

    first = ensure_embeddings(hest_root, "S2", factory(), "counting", {"scale": 1.0}, progress=False)
    assert first.computed and made[0].calls == N_SPOTS
    assert first.embeddings.shape == (N_SPOTS, 3) and first.embeddings.dtype == np.float32
    path = embedding_cache_path(hest_root, "S2", "counting", {"scale": 1.0})
    assert first.path == path and path.is_file() and path.parent.parent == hest_root / "embeddings"
    mtime = path.stat().st_mtime_ns

    again = ensure_embeddings(
        hest_root, "S2", factory(), "counting", {"scale": 1.0, "device": "cuda"}, progress=False
    )
    assert not again.computed and len(made) == 1  # the factory was never called
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.embeddings, first.embeddings)

    other = ensure_embeddings(hest_root, "S2", factory(2.0), "counting", {"scale": 2.0}, progress=False)
    assert other.computed and other.path != path
    np.testing.assert_allclose(other.embeddings, 2 * first.embeddings, rtol=1e-6)

    # a rewritten patches file invalidates the cache
    os.utime(hest_root / "patches" / "S2.h5", ns=(mtime + 10**9, mtime + 10**9))
    assert ensure_embeddings(hest_root, "S2", factory(), "counting", {"scale": 1.0}, progress=False).computed
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    with pytest.raises(FileNotFoundError, match="patches file"):
        ensure_embeddings(hest_root, "nope", factory(), "counting", {}, progress=False)


def test_read_hest_attaches_embeddings(hest_root: Path, tmp_path: Path) -> None:
    ext = CountingExtractor()
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        ds = read_hest(hest_root, feature_backend=ext, cache_dir=cache, progress=False)
    assert ext.calls == N_SPOTS * 4 - 1
    s1 = ds.slides["S1"]
    validate_slide(s1, genes=ds.genes)
    with h5py.File(hest_root / "patches" / "S1.h5") as f:
        img = f["img"][:]
    expected = ext(img[:-1]).numpy()
    np.testing.assert_allclose(s1.obsm["features"], expected, rtol=1e-6)
    assert ds.embedding_paths["S1"].is_relative_to(cache)
    with pytest.warns(UserWarning):
        read_hest(hest_root, feature_backend=ext, cache_dir=cache, progress=False)
    assert ext.calls == N_SPOTS * 4 - 1 + N_SPOTS - 2  # only the explicit call above


def test_read_hest_with_registered_backend(hest_root: Path) -> None:
    with pytest.warns(UserWarning):
        ds = read_hest(
            hest_root,
            feature_backend="handcrafted",
            backend_params={"device": "cpu"},
            samples=["S1", "S3"],
            progress=False,
        )
    assert set(ds.slides) == {"S1", "S3"}
    feats = ds.slides["S3"].obsm["features"]
    assert feats.shape == (N_SPOTS, 47) and np.isfinite(feats).all()
    assert ds.embedding_paths["S3"].parent.name.startswith("handcrafted-")
