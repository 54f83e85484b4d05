from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from stgen.cli import main
from stgen.data.graph import slide_to_data
from stgen.encoders.fa_local import FALocalEncoder
from stgen.encoders.gnn import GNNEncoder
from stgen.generators.flow import FlowGenerator
from stgen.predict import ChunkedEncoder
from stgen.priors.zinb import ZINBPrior


@pytest.mark.parametrize("make", [lambda: GNNEncoder(16, 12, hidden_dim=16, num_layers=2),
                                  lambda: FALocalEncoder(16, 12, hidden_dim=16, edge_dim=16, num_layers=2)])
def test_chunked_sampling_equals_whole_slide(tiny_slides, make):
    torch.manual_seed(0)
    enc = make().eval()
    batch = Batch.from_data_list([slide_to_data(tiny_slides[0], genes=None, k=8)])
    gen, prior = FlowGenerator(steps=5), ZINBPrior(12)
    with torch.no_grad():
        whole = gen.sample(enc, batch, prior, seed=1)
        chunked = gen.sample(ChunkedEncoder(enc, chunk_size=17), batch, prior, seed=1)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_predict_command_writes_mean_and_std_and_never_overwrites(tmp_path, tiny_slides):
    run = tmp_path / "run"
    assert main(["run", "encoder=gnn", "generator=flow", "prior=zinb", "data.n_slides=4", "data.n_patients=4",
                 "data.n_spots=80", "data.n_genes=6", "data.feature_dim=8", "trainer.max_epochs=1",
                 "train.crops_per_slide=2", "trainer.enable_progress_bar=false", f"output_dir={run}"]) == 0
    new = ad.read_h5ad(next((run / "predictions").glob("*.h5ad")))
    new.X = np.zeros_like(new.X)  # a slide that was never sequenced
    del new.layers["stgen_mean"]
    src = tmp_path / "new_slide.h5ad"
    new.write_h5ad(src)
    out = tmp_path / "pred"
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["predict", str(ckpt), str(src), "-o", str(out), "--n-samples", "3"]) == 0
    res = ad.read_h5ad(out / "new_slide.h5ad")
    assert res.layers["stgen_mean"].shape == (new.n_obs, 6)
    assert (res.layers["stgen_std"] >= 0).all() and res.layers["stgen_std"].max() > 0
    assert res.uns["stgen"]["n_samples"] == 3
    before = (out / "new_slide.h5ad").stat().st_mtime_ns
    assert main(["predict", str(ckpt), str(src), "-o", str(out)]) == 2
    assert (out / "new_slide.h5ad").stat().st_mtime_ns == before
    bad = new.copy()
    bad.obsm["features"] = bad.obsm["features"][:, :3]
    bad.write_h5ad(tmp_path / "bad.h5ad")
    assert main(["predict", str(ckpt), str(tmp_path / "bad.h5ad"), "-o", str(tmp_path / "p2")]) == 2
    assert not (tmp_path / "p2" / "bad.h5ad").exists()


def test_plot_command_maps_measured_predicted_and_spread(tmp_path):
    from stgen.data.simulate import SimulationConfig, simulate

    a = simulate(SimulationConfig(n_slides=1, n_spots=60, n_genes=4, feature_dim=4))[0]
    a.layers["stgen_mean"] = np.log1p(np.asarray(a.X))
    a.layers["stgen_std"] = np.ones_like(a.layers["stgen_mean"])
    src = tmp_path / "pred.h5ad"
    a.write_h5ad(src)
    fig = tmp_path / "maps.png"
    assert main(["plot", str(src), "--genes", "gene000", "gene001", "-o", str(fig)]) == 0
    assert fig.stat().st_size > 1000 and fig.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(src), "--genes", "gene000", "-o", str(fig)]) == 2  # never overwritten
    assert main(["plot", str(src), "--genes", "NOPE", "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
