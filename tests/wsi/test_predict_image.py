from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

import stgen
from stgen.cli import main
from stgen.io import write_h5ad
from stgen.wsi.pipeline import predict_image
from stgen.wsi.settings import MissingBackendError
from stgen.wsi.synthetic import synthetic_slide, write_pyramid

MPP = 2.0  # synthetic slide: 800 px x 2 um = 1.6 mm


@pytest.fixture(scope="module")
def synthetic_tif(tmp_path_factory):
    img, truth, _ = synthetic_slide(800)
    path = write_pyramid(tmp_path_factory.mktemp("slides") / "synthetic.tif", img, MPP, factors=(1, 2, 8))
    return path, truth


def test_lattice_prediction_matches_checkpoint_geometry_and_caches(handcrafted_module, synthetic_tif, tmp_path):
    path, truth = synthetic_tif
    res = predict_image(handcrafted_module, path, cache_dir=tmp_path / "cache", mask_path=tmp_path / "mask.png",
                        progress=False, return_result=True)
    a = res.adata
    xy = a.obsm["spatial"]
    d, _ = cKDTree(xy).query(xy, k=2)
    assert np.median(d[:, 1]) * MPP == pytest.approx(100.0)  # the checkpoint's 100 um, hexagonal
    counts = [len(n) - 1 for n in cKDTree(xy).query_ball_point(xy, 50.0 * 1.01)]
    assert np.percentile(counts, 75) == 6
    assert truth[(xy[:, 1]).astype(int), (xy[:, 0]).astype(int)].mean() > 0.97  # spots on tissue only
    assert a.n_obs > 100 and list(a.var_names) == list(handcrafted_module.genes)
    assert a.layers["stgen_mean"].shape == (a.n_obs, 4) and np.isfinite(a.layers["stgen_mean"]).all()
    assert "features" not in a.obsm
    lib = a.uns["spatial"]["synthetic"]
    hires, sf = lib["images"]["hires"], lib["scalefactors"]
    assert hires.dtype == np.uint8 and max(hires.shape[:2]) <= 2000
    assert sf["tissue_hires_scalef"] * 800 == pytest.approx(hires.shape[1])
    assert sf["spot_diameter_fullres"] == pytest.approx(50.0 / MPP)  # half the spacing
    wsi = a.uns["stgen"]["wsi"]
    assert wsi["patch_level"] == 0 and wsi["crop_px"] == 56 and not res.cache_hit  # 112 um at 2 um/px
    assert (tmp_path / "mask.png").read_bytes()[:4] == b"\x89PNG"
    again = predict_image(handcrafted_module, path, cache_dir=tmp_path / "cache", progress=False,
                          return_result=True)
    assert again.cache_hit and again.timings["extraction"] < res.timings["extraction"]
    np.testing.assert_array_equal(again.adata.layers["stgen_mean"], a.layers["stgen_mean"])
    other = predict_image(handcrafted_module, path, cache_dir=tmp_path / "cache", spacing_um=150.0, layout="square",
                          progress=False, return_result=True)
    assert not other.cache_hit  # another lattice, another cache entry
    d, _ = cKDTree(other.adata.obsm["spatial"]).query(other.adata.obsm["spatial"], k=2)
    assert np.median(d[:, 1]) * MPP == pytest.approx(150.0)


def test_given_spots_from_csv_and_h5ad(handcrafted_module, synthetic_tif, tmp_path):
    path, _ = synthetic_tif
    xy = np.array([[400.0, 400.0], [350.0, 410.0], [450.0, 320.0]])
    csv = tmp_path / "spots.csv"
    pd.DataFrame({"barcode": ["a", "b", "c"], "pixel_x": xy[:, 0], "pixel_y": xy[:, 1]}).to_csv(csv, index=False)
    a = predict_image(handcrafted_module, path, spots=csv, cache_dir=tmp_path / "c", keep_features=True,
                      progress=False)
    assert list(a.obs_names) == ["a", "b", "c"] and np.allclose(a.obsm["spatial"], xy)
    assert a.obsm["features"].shape == (3, 47)
    write_h5ad(a, tmp_path / "spots.h5ad")
    b = predict_image(handcrafted_module, path, spots=tmp_path / "spots.h5ad", cache_dir=tmp_path / "c",
                      progress=False)
    np.testing.assert_allclose(b.layers["stgen_mean"], a.layers["stgen_mean"], atol=1e-6)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"u": [1.0], "v": [2.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad.csv: no pixel-position columns"):
        predict_image(handcrafted_module, path, spots=bad, progress=False)


def test_missing_backend_is_a_clear_error_and_can_be_given(handcrafted_module, synthetic_tif, tmp_path):
    from stgen.lit import STGenLightning

    path, _ = synthetic_tif
    hp = dict(handcrafted_module.hparams)
    hp["data_spec"] = None  # as an older checkpoint, or one trained on embeddings from elsewhere
    old = STGenLightning(**hp)
    old.load_state_dict(handcrafted_module.state_dict())
    with pytest.raises(MissingBackendError, match=r"--features efficientnet_lite0"):
        predict_image(old, path, progress=False)
    a = predict_image(old, path, features="handcrafted", spacing_um=100.0, layout="hex", cache_dir=tmp_path,
                      progress=False)
    wsi = a.uns["stgen"]["wsi"]
    assert wsi["features"]["name"] == "handcrafted" and wsi["settings_from"]["features"].startswith("given")
    assert wsi["patch_px"] == 224 and wsi["settings_from"]["patch_um"] == "HEST default"
    assert np.isfinite(a.layers["stgen_mean"]).all() and a.n_obs > 100
    with pytest.raises(ValueError, match="trained on 'handcrafted' embeddings"):
        predict_image(handcrafted_module, path, features="efficientnet_lite0", progress=False)


def test_cli_predicts_images_validates_everything_first_and_never_overwrites(handcrafted_checkpoint,
                                                                            synthetic_tif, tmp_path, capsys):
    from PIL import Image

    path, _ = synthetic_tif
    img, _, _ = synthetic_slide(400)
    jpg = tmp_path / "small.jpg"
    Image.fromarray(img).save(jpg, quality=95)
    out = tmp_path / "out"
    # the jpg has no resolution: nothing is created, the error names the file and --mpp
    assert main(["predict", str(handcrafted_checkpoint), str(path), str(jpg), "-o", str(out),
                 "--cache-dir", str(tmp_path / "c"), "--num-workers", "0"]) == 2
    assert "small.jpg" in capsys.readouterr().err and not out.exists()
    # a glob, --mpp for both (the tif's metadata is overridden by the same value)
    assert main(["predict", str(handcrafted_checkpoint), str(tmp_path.parent / path.parent.name / "*.tif"), str(jpg),
                 "-o", str(out), "--mpp", "2.0", "--n-samples", "1", "--cache-dir", str(tmp_path / "c"),
                 "--num-workers", "1"]) == 0
    assert {p.name for p in out.iterdir()} == {"synthetic.h5ad", "synthetic_tissue.png", "small.h5ad",
                                               "small_tissue.png"}
    import anndata as ad

    res = ad.read_h5ad(out / "synthetic.h5ad")
    assert res.uns["stgen"]["wsi"]["features"]["name"] == "handcrafted" and "stgen_mean" in res.layers
    before = (out / "synthetic.h5ad").stat().st_mtime_ns
    assert main(["predict", str(handcrafted_checkpoint), str(path), "-o", str(out),
                 "--cache-dir", str(tmp_path / "c")]) == 2
    assert "exist" in capsys.readouterr().err and (out / "synthetic.h5ad").stat().st_mtime_ns == before


def test_squidpy_draws_the_prediction_on_the_tissue(handcrafted_module, synthetic_tif, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import squidpy as sq

    path, _ = synthetic_tif
    a = predict_image(handcrafted_module, path, cache_dir=tmp_path, progress=False)
    write_h5ad(a, tmp_path / "pred.h5ad")
    import anndata as ad

    a = ad.read_h5ad(tmp_path / "pred.h5ad")
    sq.pl.spatial_scatter(a, color="ERBB2", layer="stgen_mean")
    fig = plt.gcf()
    ax = fig.axes[0]
    assert ax.images, "the H&E image is drawn"
    assert len(ax.collections) >= 1 and len(ax.collections[0].get_paths()) == a.n_obs  # one circle per spot
    fig.savefig(tmp_path / "sq.png")
    plt.close("all")
    assert (tmp_path / "sq.png").stat().st_size > 5000


def test_python_api_is_reexported():
    assert stgen.predict_slide is predict_image
