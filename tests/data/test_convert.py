from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stgen.data.convert import convert_to_hest, read_her2st, select_variable_genes
from stgen.data.hest import read_hest
from stgen.data.hest_patches import Patches, read_patches_h5
from stgen.data.slide import SlideError, make_slide

HER2ST = Path(__file__).resolve().parents[3] / "shared" / "data" / "her2st"
N_GENES = 30


def _section(sid: str, patient: str, seed: int, n: int = 15) -> tuple:
    rng = np.random.default_rng(seed)
    genes = [f"G{i:02d}" for i in range(N_GENES)]
    # gene i has mean ~ i / 3 and growing spread, so later genes are the more variable ones
    lam = rng.gamma(shape=2.0, scale=np.linspace(0.2, 5.0, N_GENES) / 2.0, size=(n, N_GENES))
    counts = rng.poisson(lam).astype(np.float32)
    counts[:, 0] = 0
    counts[0, 0] = 1  # G00 detected in < 10% of the spots: never a candidate
    barcodes = [f"{sid}-{i}" for i in range(n)]
    coords = rng.uniform(0, 1000, size=(n, 2))
    slide = make_slide(
        sp.csr_matrix(counts), coords, slide=sid, genes=genes, barcodes=barcodes, patient=patient
    )
    img = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    return slide, Patches(img=img, coords=coords, barcodes=barcodes, um_per_px=0.5)


@pytest.fixture
def sections() -> list:
    return [_section("A1", "A", 0), _section("B1", "B", 1), _section("B2", "B", 2)]


def test_convert_and_read_back(sections: list, tmp_path: Path) -> None:
    out = convert_to_hest(sections, tmp_path / "hest", split_by="patient", n_genes=8)
    assert out == tmp_path / "hest"
    assert sorted(p.name for p in out.iterdir()) == ["patches", "splits", "st", "var_8genes.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["hest"]  # no temporary folder left behind
    genes = json.loads((out / "var_8genes.json").read_text())["genes"]
    assert len(genes) == 8 and "G00" not in genes
    split = pd.read_csv(out / "splits" / "test_1.csv")
    assert list(split.columns[:3]) == ["sample_id", "patches_path", "expr_path"]

    ds = read_hest(out, genes_file="var_8genes.json")
    assert ds.folds == [(["B1", "B2"], ["A1"]), (["A1"], ["B1", "B2"])]
    assert ds.genes == genes and sum(ds.dropped.values()) == 0
    for (slide, patches), sid in zip(sections, ["A1", "B1", "B2"], strict=True):
        back = ds.slides[sid]
        assert back.uns["stgen"]["patient"] == slide.uns["stgen"]["patient"]
        np.testing.assert_array_equal(back.X.toarray(), slide.X.toarray())
        np.testing.assert_allclose(back.obsm["spatial"], slide.obsm["spatial"])
        stored = read_patches_h5(out / "patches" / f"{sid}.h5")
        np.testing.assert_array_equal(stored.img, patches.img)
        assert stored.barcodes == patches.barcodes and stored.um_per_px == 0.5


def test_section_splits_and_refusing_to_overwrite(sections: list, tmp_path: Path) -> None:
    out = convert_to_hest(sections, tmp_path / "hest", split_by="section", n_genes=5)
    ds = read_hest(out, genes_file="var_5genes.json")
    assert [te for _, te in ds.folds] == [["A1"], ["B1"], ["B2"]]
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="not empty; refusing to overwrite"):
        convert_to_hest(sections, out, n_genes=5)
    assert sorted(str(p) for p in out.rglob("*")) == before
    (tmp_path / "empty").mkdir()
    convert_to_hest(sections, tmp_path / "empty", n_genes=5)
    assert (tmp_path / "empty" / "var_5genes.json").is_file()


def test_convert_input_errors(sections: list, tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="one group"):
        convert_to_hest(sections[1:], tmp_path / "x", split_by="patient")
    with pytest.raises(SlideError, match="appears twice"):
        convert_to_hest([sections[0], sections[0]], tmp_path / "x", split_by="section")
    slide, patches = sections[0]
    bad = Patches(img=patches.img[:1], coords=patches.coords[:1], barcodes=["nope"])
    with pytest.raises(SlideError, match="not spots of the slide"):
        convert_to_hest([(slide, bad), sections[1]], tmp_path / "x")
    with pytest.raises(SlideError, match="cannot choose 40"):
        convert_to_hest(sections, tmp_path / "x", n_genes=40)
    assert not (tmp_path / "x").exists()


def test_select_variable_genes_prefers_overdispersed_genes() -> None:
    """Genes whose log1p counts vary most win; ``include`` forces a gene into the panel."""
    rng = np.random.default_rng(0)
    n, g = 200, 1000
    means = np.exp(rng.uniform(np.log(0.5), np.log(20.0), g))
    lam = np.tile(means, (n, 1))
    hot = [7, 250, 500, 750, 999]
    means[hot] = 5.0
    lam[:, hot] = rng.gamma(0.3, means[hot] / 0.3, size=(n, len(hot)))  # same means, much larger spread
    counts = rng.poisson(lam).astype(np.float32)
    genes = [f"g{i}" for i in range(g)]
    slides = [
        make_slide(counts[:100], rng.uniform(size=(100, 2)), slide="a", genes=genes),
        make_slide(counts[100:], rng.uniform(size=(100, 2)), slide="b", genes=genes),
    ]
    assert set(select_variable_genes(slides, len(hot))) == {genes[i] for i in hot}
    forced = select_variable_genes(slides, len(hot), include=["g3"])
    assert "g3" in forced and len(forced) == len(hot)


@pytest.mark.skipif(not (HER2ST / "images" / "A1_lowres.png").is_file(), reason="her2st data not available")
def test_read_her2st_a1() -> None:
    [(slide, patches)] = read_her2st(HER2ST, ["A1"])
    assert slide.uns["stgen"]["slide_id"] == "A1" and slide.n_obs == 346
    assert len(patches) == 346 and patches.img.shape[1:] == (224, 224, 3)
    assert patches.barcodes == list(slide.obs_names)
