from __future__ import annotations

import pytest

from stgen.data.simulate import SimulationConfig, simulate


@pytest.fixture(scope="session")
def tiny_slides():
    """Six small simulated slides from three patients."""
    return simulate(SimulationConfig(n_slides=6, n_patients=3, n_spots=120, n_genes=12, feature_dim=16, seed=1))


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tests run single-threaded: faster on 2 shared cores, and reproducible."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def run_python():
    """Run a Python snippet in a fresh interpreter; return its stdout (the snippet must exit 0)."""
    import subprocess
    import sys

    def run(code: str) -> str:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return res.stdout

    return run
