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
