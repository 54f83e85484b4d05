"""Predicting a her2st section from its image at the measured spots equals predicting it from the
HEST-style folder that `stgen convert` + `stgen extract` make (same patches, same backend), and the
checkpoint of a run on that folder records the data spec."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from stgen.cli import main


@pytest.fixture(scope="module")
def her2st_run(tmp_path_factory, her2st_root):
    tmp = tmp_path_factory.mktemp("her2st")
    root = tmp / "hest"
    assert main(["convert", "legacy-st", str(her2st_root), "-o", str(root), "--sections", "C2", "C3", "C4",
                 "--split-by", "section", "--n-genes", "20", "--include-genes", "ERBB2"]) == 0
    assert main(["extract", str(root), "features=handcrafted"]) == 0
    run = tmp / "run"
    assert main(["run", "data=hest", f"data.root={root}", "data.fold=0", "features=handcrafted", "encoder=mlp",
                 "generator=regression", "prior=zero", "trainer.max_epochs=1", "train.crops_per_slide=2",
                 "eval.ridge=false", "trainer.enable_progress_bar=false", f"output_dir={run}"]) == 0
    return root, run / "checkpoints" / "best.ckpt"


def test_checkpoint_records_backend_patch_size_and_lattice(her2st_run):
    _, ckpt = her2st_run
    spec = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["data_spec"]
    assert spec["features"]["name"] == "handcrafted" and spec["features"]["weights_sha256"] is None
    assert spec["patch_um"] == pytest.approx(112.0, rel=1e-2) and spec["patch_px"] == 224
    assert spec["spot_spacing_um"] == pytest.approx(200.0, rel=0.02) and spec["layout"] == "square"


def test_image_with_spots_equals_hest_folder(her2st_run, her2st_root, tmp_path):
    from stgen.data.hest_data import HestData
    from stgen.predict import load_module, predict_slide
    from stgen.wsi.pipeline import predict_image

    root, ckpt = her2st_run
    module = load_module(ckpt)
    bundle = HestData(root=str(root)).load({"name": "handcrafted"})
    section = bundle.slides["C2"]
    ref = predict_slide(module, section, n_samples=1)
    st = root / "st" / "C2.h5ad"
    mpp = float(ad.read_h5ad(st).uns["stgen"]["legacy_st"]["um_per_px"])
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(her2st_root / "images" / "C2.jpg"), "--mpp", str(mpp), "--spots", str(st),
                 "-o", str(out), "--n-samples", "1", "--cache-dir", str(tmp_path / "c"), "--keep-features",
                 "--num-workers", "0"]) == 0
    img = ad.read_h5ad(out / "C2.h5ad")
    img = img[list(section.obs_names)]
    np.testing.assert_allclose(img.obsm["features"], section.obsm["features"], atol=1e-5)
    np.testing.assert_allclose(img.layers["stgen_mean"], ref.mean, atol=1e-4)
    np.testing.assert_allclose(img.obsm["spatial"], section.obsm["spatial"])
    # the same through the Python API without spots: a 200 um square lattice over the tissue
    a = predict_image(module, her2st_root / "images" / "C2.jpg", mpp=mpp, cache_dir=tmp_path / "c", progress=False)
    assert a.uns["stgen"]["wsi"]["layout"] == "square" and a.uns["stgen"]["wsi"]["spacing_um"] == pytest.approx(200, rel=0.02)
    # the same 200 um grid over the same tissue: about as many spots as the array measured under it
    assert 0.8 * section.n_obs < a.n_obs < 1.25 * section.n_obs


def test_features_on_simulated_data_is_an_error(capsys):
    assert main(["run", "data=simulated", "features=handcrafted", "trainer.max_epochs=1"]) == 2
    assert "does not use a feature backend" in capsys.readouterr().err
