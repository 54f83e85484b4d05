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


@pytest.mark.parametrize("n_samples", [1, 3])
def test_chunked_gaussian_head_gives_the_whole_slide_mean_and_spread(tiny_slides, n_samples):
    """The Gaussian head's wider encoder output (mean and log-variance) goes through the chunks unchanged."""
    from stgen.generators.regression import RegressionGenerator

    torch.manual_seed(0)
    gen = RegressionGenerator(likelihood="gaussian")
    enc = FALocalEncoder(16, gen.encoder_out_dim(12), hidden_dim=16, edge_dim=16, num_layers=2).eval()
    batch = Batch.from_data_list([slide_to_data(tiny_slides[0], genes=None, k=8)])
    prior = ZINBPrior(12)
    whole = gen.predict(enc, batch, prior, n_samples=n_samples)
    chunked = gen.predict(ChunkedEncoder(enc, chunk_size=17), batch, prior, n_samples=n_samples)
    assert whole.mean.shape == (batch.num_nodes, 12) and whole.std is not None
    assert torch.allclose(whole.mean, chunked.mean, atol=1e-5)
    assert torch.allclose(whole.std, chunked.std, atol=1e-5)


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


def _random_slide_batch(n: int, seed: int = 0, features: int = 16) -> Batch:
    from torch_geometric.data import Data

    from stgen.data.graph import knn_edges

    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 2, generator=gen) * (n**0.5 * 100.0)  # random order: no spatial file order
    data = Data(x=torch.randn(n, features, generator=gen), pos=pos, edge_index=knn_edges(pos, 8))
    return Batch.from_data_list([data])


def _small_fa_local(genes: int = 12) -> FALocalEncoder:
    torch.manual_seed(0)
    return FALocalEncoder(16, genes, hidden_dim=16, edge_dim=16, num_layers=2).eval()


def test_spatial_chunks_whatever_the_file_order():
    """Chunks follow a Hilbert curve: with spots stored in random order the halo stays small."""
    from torch_geometric.utils import k_hop_subgraph

    batch = _random_slide_batch(3000)
    enc = _small_fa_local()
    plan = ChunkedEncoder(enc, chunk_size=500).plan(batch)
    assert len(plan.chunks) == 6
    cores = torch.cat([c.core for c in plan.chunks])
    assert torch.equal(cores.sort().values, torch.arange(3000))  # every spot in exactly one chunk
    halo = sum(c.subset.numel() - c.core.numel() for c in plan.chunks)
    # index-range chunks of a randomly ordered file: the 2-hop halo covers most of the slide
    naive = sum(k_hop_subgraph(torch.arange(s, s + 500), 2, batch.edge_index, num_nodes=3000)[0].numel() - 500
                for s in range(0, 3000, 500))
    assert halo < 1.0 * 3000 and naive > 3 * halo
    gen, prior = FlowGenerator(steps=4), ZINBPrior(12)
    with torch.no_grad():
        whole = gen.sample(enc, batch, prior, seed=2)
        chunked = gen.sample(ChunkedEncoder(enc, chunk_size=500), batch, prior, seed=2)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_chunk_plan_built_once_and_reused_by_steps_and_samples():
    batch = _random_slide_batch(1200)
    enc = _small_fa_local()
    calls = {"prepare": 0, "edges": 0}
    prepare, edge_features = enc.prepare, enc.blocks[0].edge_features

    def counting_prepare(b):
        calls["prepare"] += 1
        return prepare(b)

    def counting_edges(*args, **kwargs):
        calls["edges"] += 1
        return edge_features(*args, **kwargs)

    enc.prepare = counting_prepare
    enc.blocks[0].edge_features = counting_edges
    chunked = ChunkedEncoder(enc, chunk_size=300, memory_budget=8 << 30)
    gen = FlowGenerator(steps=5)  # 4 network calls per sample
    with torch.no_grad():
        out = gen.predict(chunked, batch, ZINBPrior(12), seed=0, n_samples=3)
    n_chunks = len(chunked.last_plan.chunks)
    assert n_chunks == 4 and chunked.last_plan.cache_edge_features
    assert calls == {"prepare": n_chunks, "edges": n_chunks}  # not 4 calls x 3 samples x chunks
    assert out.std is not None and out.std.shape == (1200, 12)
    # without room for the edge features they are recomputed at each call, results unchanged
    calls.update(prepare=0, edges=0)
    lean = ChunkedEncoder(enc, chunk_size=300, memory_budget=8 << 30, cache_edge_features=False)
    with torch.no_grad():
        again = gen.predict(lean, batch, ZINBPrior(12), seed=0, n_samples=3)
    assert calls == {"prepare": n_chunks, "edges": 4 * 3 * n_chunks}
    assert torch.allclose(again.mean, out.mean, atol=1e-5)


def test_chunk_size_follows_the_memory_budget():
    from stgen.predict import MIN_CHUNK, held_memory, parse_memory

    batch = _random_slide_batch(20_000, features=16)
    enc = _small_fa_local()
    held = held_memory()
    assert held > 50 << 20  # the budget bounds the whole process: what it holds counts against it
    sizes = [ChunkedEncoder(enc, memory_budget=held + parse_memory(b)).plan(batch).chunk_size
             for b in ("1M", "220M", "260M", "64G")]
    assert sizes[0] == MIN_CHUNK
    assert MIN_CHUNK < sizes[1] < sizes[2] < 20_000 and sizes[3] == 20_000
    assert ChunkedEncoder(enc, memory_budget=parse_memory("350M")).plan(batch).chunk_size == MIN_CHUNK
    assert parse_memory("1.5G") == int(1.5 * 2**30) and parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(4096) == 4096
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="memory budget"):
            parse_memory(bad)


def test_prior_draws_in_blocks(monkeypatch):
    prior = ZINBPrior(50)
    g = torch.Generator().manual_seed(0)
    small = prior.sample((100, 50), generator=g)
    g.manual_seed(0)
    assert torch.equal(prior._sample((100, 50), g), small)  # one block: as before
    monkeypatch.setattr(ZINBPrior, "block_elements", 1000)  # 20 rows per block
    a = prior.sample((30_000, 50), generator=torch.Generator().manual_seed(1))
    b = prior.sample((30_000, 50), generator=torch.Generator().manual_seed(1))
    assert a.shape == (30_000, 50) and torch.equal(a, b)
    assert not torch.equal(a[:20], a[20:40])
    ref = prior._sample((30_000, 50), torch.Generator().manual_seed(2))
    assert abs(a.mean().item() - ref.mean().item()) < 0.01
    assert abs((a == 0).float().mean().item() - (ref == 0).float().mean().item()) < 0.01


def test_slide_features_are_not_copied(tiny_slides):
    from stgen.predict import slide_batch

    adata = tiny_slides[0].copy()
    adata.obsm["features"] = np.ascontiguousarray(adata.obsm["features"], dtype=np.float32)
    data = slide_to_data(adata, genes=None, k=8, with_expression=False)
    batch = slide_batch(data)
    assert batch.x.data_ptr() == adata.obsm["features"].__array_interface__["data"][0]
    assert batch.num_graphs == 1 and torch.equal(batch.batch, torch.zeros(adata.n_obs, dtype=torch.long))


def test_predict_file_writes_once_and_skips_existing(tmp_path, tiny_slides):
    from types import SimpleNamespace

    from stgen.model import STGenModel
    from stgen.predict import predict_file

    adata = tiny_slides[0]
    src = tmp_path / "slide.h5ad"
    adata.write_h5ad(src)
    model = STGenModel(GNNEncoder(16, 12, hidden_dim=16, num_layers=2), FlowGenerator(steps=3), ZINBPrior(12)).eval()
    module = SimpleNamespace(model=model, genes=list(adata.var_names),
                             hparams=SimpleNamespace(in_dim=16, model_spec={"encoder": {"name": "gnn"}}))
    dst = tmp_path / "out" / "slide.h5ad"
    dst.parent.mkdir()
    assert predict_file(module, "ckpt", src, dst, n_samples=2, memory_budget="1G") == adata.n_obs
    res = ad.read_h5ad(dst)
    assert res.layers["stgen_mean"].shape == (adata.n_obs, 12) and "stgen_std" in res.layers
    before = dst.stat().st_mtime_ns
    assert predict_file(module, "ckpt", src, dst) is None
    assert dst.stat().st_mtime_ns == before
    assert sorted(p.name for p in dst.parent.iterdir()) == ["slide.h5ad"]  # no partial file left


def test_float16_features_stay_half_and_are_standardised_per_chunk(tiny_slides):
    """float16 features are not copied to float32 for the whole slide; the checkpoint's standardisation
    is applied to each chunk's rows, with the same result as scaling the (upcast) features first."""
    from types import SimpleNamespace

    from stgen.model import STGenModel
    from stgen.predict import predict_slide
    from stgen.preprocess import FeatureScaler

    adata = tiny_slides[0].copy()
    adata.obsm["features"] = (np.asarray(adata.obsm["features"]) * 3 + 1).astype(np.float16)
    data = slide_to_data(adata, genes=None, k=8, with_expression=False, keep_half=True)
    assert data.x.dtype == torch.float16
    assert data.x.data_ptr() == adata.obsm["features"].__array_interface__["data"][0]  # not copied
    scaler = FeatureScaler(16).fit(torch.randn(500, 16) * 2 + 1)
    torch.manual_seed(0)
    enc = FALocalEncoder(16, 12, hidden_dim=16, edge_dim=16, num_layers=2)
    model = STGenModel(enc, FlowGenerator(steps=4), ZINBPrior(12), scaler=scaler).eval()
    module = SimpleNamespace(model=model, genes=list(adata.var_names), hparams=SimpleNamespace(in_dim=16))
    chunked = predict_slide(module, adata, chunk_size=40, seed=3)
    ref = Batch.from_data_list([slide_to_data(adata, genes=None, k=8, with_expression=False)])  # float32
    assert ref.x.dtype == torch.float32
    with torch.no_grad():
        expected = model.predict(ref, seed=3, n_samples=1).mean  # scaled whole slide, unchunked
    assert np.allclose(chunked.mean, expected.numpy(), atol=1e-5)
    unscaled = STGenModel(enc, FlowGenerator(steps=4), ZINBPrior(12)).eval()
    other = predict_slide(SimpleNamespace(model=unscaled, genes=module.genes, hparams=module.hparams), adata,
                          chunk_size=40, seed=3)
    assert np.abs(other.mean - chunked.mean).max() > 1e-3  # the standardisation did apply
