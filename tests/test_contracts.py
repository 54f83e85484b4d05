"""Every registered component passes the contract checks that plugin authors run too."""

from __future__ import annotations

import pytest

from stgen.registry import ENCODERS, GENERATORS, PRIORS
from stgen.testing import check_encoder, check_generator, check_prior

SMALL = {"hidden_dim": 16, "edge_dim": 16, "num_layers": 2}


def small_params(cls) -> dict:
    names = {p.name for p in cls.params()}
    return {k: v for k, v in SMALL.items() if k in names}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_contract(name):
    cls = ENCODERS.get(name)
    check_encoder(cls, **small_params(cls))


@pytest.mark.parametrize("name", GENERATORS.names())
def test_generator_contract(name):
    check_generator(GENERATORS.get(name))


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_contract(name):
    check_prior(PRIORS.get(name))
