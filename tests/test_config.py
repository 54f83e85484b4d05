from __future__ import annotations

import pytest

from stgen.config import ConfigError, compose_run, expand_sweep


def test_overrides_reach_the_config():
    cfg = compose_run(["encoder=gnn", "generator=regression", "prior=zero", "trainer.max_epochs=3",
                       "encoder.hidden_dim=64", "seed=5"])
    assert cfg.encoder.name == "gnn" and cfg.encoder.hidden_dim == 64
    assert cfg.generator.name == "regression" and cfg.prior.name == "zero"
    assert cfg.trainer.max_epochs == 3 and cfg.seed == 5


def test_component_defaults_come_from_the_constructor():
    from stgen.encoders.gnn import GNNEncoder

    cfg = compose_run(["encoder=gnn"])
    for p in GNNEncoder.params():
        assert cfg.encoder[p.name] == p.default


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("encoder=nope", "Valid encoders:"),
        ("encoder=gnm", "Did you mean 'gnn'"),
        ("prior=gausian", "Did you mean 'gaussian'"),
        ("data=simulatd", "Valid datasets: "),
        ("encoder.not_a_param=1", "unknown key 'not_a_param'"),
        ("trainer.max_epoch=3", "Valid keys:"),
        ("encoder.hidden_dim=abc", "could not be converted to Integer"),
        ("trainer.max_epochs=1.5", "max_epochs"),
    ],
)
def test_bad_overrides_fail_with_one_clear_error(override, expected):
    extra = ["encoder=gnn"] if override.startswith("encoder.") else []
    with pytest.raises(ConfigError) as err:
        compose_run([*extra, override])
    assert expected in str(err.value)


def test_sweep_expansion_is_a_cartesian_product():
    runs = expand_sweep(["encoder=gnn,mlp", "generator=regression", "seed=0,1"])
    assert len(runs) == 4
    assert ["encoder=gnn", "generator=regression", "seed=0"] in runs
    assert ["encoder=mlp", "generator=regression", "seed=1"] in runs


def test_stflow_preset_sets_the_paper_recipe():
    cfg = compose_run(["preset=stflow"])
    assert (cfg.encoder.name, cfg.generator.name, cfg.prior.name) == ("fa_local", "flow", "zinb")
    assert cfg.optim.lr == pytest.approx(5e-4) and cfg.trainer.max_epochs == 100
    assert cfg.trainer.patience == 20 and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.train.batch_size == 2 and cfg.train.crops_per_slide == 10


@pytest.mark.parametrize(("override", "home"), [("data.k=6", "k is set with encoder.k"),
                                                ("eval.n_samples=4", "n_samples is set with generator.n_samples"),
                                                ("eval.steps=4", "steps is set with generator.steps")])
def test_settings_with_one_home_name_it(override, home):
    with pytest.raises(ConfigError, match=home):
        compose_run([override])


def test_k_and_sampling_settings_live_in_the_components():
    from stgen.build import graph_k, model_spec

    cfg = compose_run(["encoder=gnn", "encoder.k=12", "generator=flow", "generator.n_samples=4"])
    assert "k" not in cfg.data and "n_samples" not in cfg.eval and "steps" not in cfg.eval
    spec = model_spec(cfg)
    assert graph_k(spec) == 12 and spec["generator"]["n_samples"] == 4
    assert graph_k(model_spec(compose_run(["encoder=mlp"]))) is None  # an encoder that reads no graph


def test_data_module_builds_exactly_the_encoders_graph(tiny_slides):
    import torch

    from stgen.data.datamodule import SlideDataModule
    from stgen.data.graph import knn_edges, slide_to_data

    slides = [a.copy() for a in tiny_slides[:3]]
    genes = list(slides[0].var_names)
    dm = SlideDataModule(slides[:2], [], slides[2:3], genes, graph_k=5, crops_per_slide=2)
    g = dm.graphs["train"][0]
    for k, same in ((5, True), (8, False)):
        other = slide_to_data(tiny_slides[0].copy(), genes=genes, k=k)
        assert (g.edge_index.shape == other.edge_index.shape and torch.equal(g.edge_index, other.edge_index)) == same
    crop = dm.train_dataloader().dataset[0]
    assert torch.equal(crop.edge_index, knn_edges(crop.pos, 5))
    none = SlideDataModule(tiny_slides[:1], [], tiny_slides[2:3], genes, graph_k=None)
    assert none.graphs["train"][0].edge_index.shape == (2, 0)
