"""The Python API: ``import stgen`` stays light; load / list_components / create_model; tl.predict; pl."""

from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import stgen
from stgen.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained gnn/flow model (encoder.k=5, generator.n_samples=3) and one of its predicted slides."""
    out = tmp_path_factory.mktemp("api") / "run"
    assert main(["run", "encoder=gnn", "encoder.k=5", "encoder.hidden_dim=16", "generator=flow",
                 "generator.n_samples=3", "generator.steps=2", "prior=zinb", "data.n_slides=4", "data.n_patients=4",
                 "data.n_spots=80", "data.n_genes=6", "data.feature_dim=8", "trainer.max_epochs=1",
                 "train.crops_per_slide=2", "trainer.enable_progress_bar=false", f"output_dir={out}"]) == 0
    return out / "checkpoints" / "best.ckpt", next((out / "predictions").glob("*.h5ad"))


def test_import_stgen_is_light_and_lazy(run_python):
    code = ("import sys, stgen; heavy = [m for m in ('torch', 'pytorch_lightning', 'anndata', 'hydra') "
            "if m in sys.modules]; print(heavy); print(sorted(n for n in ('load', 'tl', 'pl', 'create_model', "
            "'list_components') if n in dir(stgen)))")
    heavy, names = run_python(code).strip().splitlines()
    assert heavy == "[]"
    assert names == "['create_model', 'list_components', 'load', 'pl', 'tl']"
    with pytest.raises(AttributeError):
        stgen.not_a_function  # noqa: B018


def test_list_components_and_create_model():
    encoders = stgen.list_components("encoder")
    assert {"fa_local", "gnn", "mlp"} <= set(encoders) and encoders == sorted(encoders)
    assert stgen.list_components("encoders") == encoders  # alias from the registry table
    assert stgen.list_components("encoder", filter="fa_*") == ["fa_local"]
    every = stgen.list_components()
    assert "encoder/gnn" in every and "data/simulated" in every and "features/handcrafted" in every
    with pytest.raises(KeyError, match="Valid component kinds"):
        stgen.list_components("encodr")
    model = stgen.create_model("gnn", in_dim=8, n_genes=5, k=12, hidden_dim=16,
                               generator={"name": "flow", "n_samples": 4}, prior="gaussian")
    assert model.encoder.graph_k == 12
    assert model.generator.n_samples == 4 and type(model.prior).__name__ == "GaussianPrior"
    assert stgen.create_model("mlp", in_dim=8, n_genes=5).encoder.graph_k is None
    with pytest.raises(KeyError, match="no parameter"):
        stgen.create_model("gnn", in_dim=8, n_genes=5, kk=3)


def test_load_records_k_and_sampling_settings(trained):
    ckpt, _ = trained
    model = stgen.load(ckpt)
    assert model.model.encoder.graph_k == 5
    spec = model.hparams.model_spec
    assert spec["encoder"]["k"] == 5 and spec["generator"]["n_samples"] == 3 and spec["generator"]["steps"] == 2
    assert "eval_n_samples" not in model.hparams and "eval_steps" not in model.hparams
    with pytest.raises(FileNotFoundError):
        stgen.load(ckpt.with_name("missing.ckpt"))


def _new_slide(pred_path: Path) -> ad.AnnData:
    a = ad.read_h5ad(pred_path)
    for layer in list(a.layers):
        del a.layers[layer]
    for key in list(a.obsp):
        del a.obsp[key]
    a.uns.pop("stgen_graph", None)  # a user's slide: no graph of ours
    return a


def test_tl_predict_writes_under_key_added_and_never_overwrites(trained, monkeypatch):
    ckpt, pred_path = trained
    model = stgen.load(ckpt)
    adata = _new_slide(pred_path)
    # the caller's own graph (another k) must survive prediction untouched
    theirs = sp.random(adata.n_obs, adata.n_obs, density=0.05, format="csr", random_state=0)
    adata.obsp["spatial_connectivities"] = theirs.copy()
    uns_before = set(adata.uns)

    import stgen.predict as predict_module

    seen_k = []
    real = predict_module.slide_to_data

    def spy(*args, **kwargs):
        seen_k.append(kwargs["k"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "slide_to_data", spy)
    assert stgen.tl.predict(adata, model, key_added="mine") is None
    assert seen_k == [5]  # the graph of the checkpoint's encoder (encoder.k=5), no other copy of k
    mean, std = adata.obsm["mine_mean"], adata.obsm["mine_std"]
    assert list(mean.columns) == model.genes and mean.shape == (adata.n_obs, len(model.genes))
    assert list(mean.index) == list(adata.obs_names) and np.isfinite(mean.to_numpy()).all()
    assert (std.to_numpy() >= 0).all() and std.to_numpy().max() > 0  # generator.n_samples=3 from the checkpoint
    info = adata.uns["mine_params"]
    assert info["n_samples"] == 3 and info["steps"] == 2 and info["graph_k"] == 5 and info["genes"] == model.genes
    assert (adata.obsp["spatial_connectivities"] != theirs).nnz == 0
    assert set(adata.uns) == uns_before | {"mine_params"}
    with pytest.raises(KeyError, match="already exist"):
        stgen.tl.predict(adata, model, key_added="mine")
    stgen.tl.predict(adata, model, key_added="mine", n_samples=1, overwrite=True)
    assert "mine_std" not in adata.obsm and adata.uns["mine_params"]["n_samples"] == 1
    copy = stgen.tl.predict(adata, model, key_added="other", copy=True)
    assert "other_mean" in copy.obsm and "other_mean" not in adata.obsm
    bare = ad.AnnData(obs=adata.obs[[]].copy(), obsm={"spatial": adata.obsm["spatial"]})
    with pytest.raises(ValueError, match="obsm\\['features'\\]"):
        stgen.tl.predict(bare, model)


def test_pl_expression_reads_tl_results(trained, tmp_path):
    ckpt, pred_path = trained
    model = stgen.load(ckpt)
    adata = _new_slide(pred_path)
    stgen.tl.predict(adata, model)
    gene = model.genes[0]
    fig = stgen.pl.expression(adata, genes=[gene], save=tmp_path / "maps.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any(gene in t and "measured" in t for t in titles) and any("r = " in t for t in titles)
    assert (tmp_path / "maps.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        stgen.pl.expression(adata, genes=[gene], save=tmp_path / "maps.png")
    assert len(stgen.pl.pearson(adata).axes[0].patches) == len(model.genes)


def test_docs_api_example_runs(trained, tmp_path, monkeypatch):
    """The example of docs/api.md, executed as written (its checkpoint and slide paths substituted)."""
    ckpt, pred_path = trained
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/api.md has no python example"
    code = "\n".join(blocks)
    slide = tmp_path / "slide.h5ad"
    _new_slide(pred_path).write_h5ad(slide)
    code = code.replace("outputs/my_run/checkpoints/best.ckpt", str(ckpt)).replace("new_slide.h5ad", str(slide))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - the documented example itself
    assert "stgen_mean" in namespace["adata"].obsm
    assert list(tmp_path.glob("*.png"))


def test_checkpoints_from_before_the_move_still_load():
    from stgen.lit import STGenLightning

    spec = {"encoder": {"name": "mlp"}, "generator": {"name": "flow", "n_samples": 2}, "prior": {"name": "zero"}}
    old = STGenLightning(spec, in_dim=4, genes=["a", "b"], eval_steps=None, eval_n_samples=1)
    assert old.model.generator.n_samples == 2 and "eval_n_samples" not in old.hparams
    with pytest.raises(TypeError, match="unexpected argument"):
        STGenLightning(spec, in_dim=4, genes=["a", "b"], eval_n_sample=1)
