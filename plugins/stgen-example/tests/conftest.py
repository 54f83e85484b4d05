from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tests run single-threaded: faster on few shared cores, and reproducible."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
