from __future__ import annotations

import pytest

from stgen.data.simulate import SimulationConfig, simulate


@pytest.fixture(scope="session")
def tiny_slides():
    """Six small simulated slides from three patients."""
    return simulate(SimulationConfig(n_slides=6, n_patients=3, n_spots=120, n_genes=12, feature_dim=16, seed=1))
