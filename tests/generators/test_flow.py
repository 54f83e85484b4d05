from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.flow import FlowGenerator, flow_times
from stgen.priors.zero import ZeroPrior
from stgen.testing import toy_batch


class Recorder(Encoder):
    """Predicts a constant endpoint and records the times and states it was called with."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.times: list[float] = []
        self.states: list[Tensor] = []
        self.prepared = 0
        self.scale = torch.nn.Parameter(torch.ones(()))

    def prepare(self, batch: Batch) -> Any:
        self.prepared += 1
        return None

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        self.times.append(float(t[0]))
        self.states.append(y.clone())
        return torch.full_like(y, 2.0) * self.scale


@pytest.mark.parametrize(("steps", "expected"), [
    (5, [0.01, 0.2575, 0.505, 0.7525]),
    (2, [0.01]),
    (1, [0.01]),
])
def test_code_schedule_calls_and_times(steps, expected):
    enc = Recorder(12, 5)
    FlowGenerator(steps=steps).sample(enc, toy_batch(), ZeroPrior(5), seed=0)
    assert enc.times == pytest.approx(expected)
    assert enc.prepared == 1  # geometry is prepared once per sample, reused by every call


def test_paper_schedule_calls_and_times():
    enc = Recorder(12, 5)
    FlowGenerator(steps=4, schedule="paper").sample(enc, toy_batch(), ZeroPrior(5), seed=0)
    assert enc.times == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_euler_steps_follow_the_endpoint_velocity():
    enc = Recorder(12, 5)
    out = FlowGenerator(steps=5).sample(enc, toy_batch(), ZeroPrior(5), seed=0)
    times = [t for t, _ in flow_times(5)] + [1.0]
    # y0 = 0, endpoint always 2: y_{t2} = y_{t1} + (t2 - t1) (2 - y_{t1}) / (1 - t1)
    y = 0.0
    for i, state in enumerate(enc.states):
        assert torch.allclose(state, torch.full_like(state, y), atol=1e-6)
        t1, t2 = times[i], times[i + 1]
        y = y + (t2 - t1) * (2.0 - y) / (1 - t1)
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_in_place_euler_steps_equal_the_plain_formula():
    """The in-place update gives the same values as ``y + (t2 - t1) * (pred - y) / (1 - t1)``."""
    from stgen.generators.flow import euler_endpoint_sampler

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(7, 7, generator=gen)

    def net(y: Tensor, t: float) -> Tensor:
        return torch.tanh(y @ w) + t

    y0 = torch.randn(300, 7, generator=gen)
    times = flow_times(5)
    y, pred = y0, y0
    for i, (t1, t2) in enumerate(times):
        pred = net(y, t1)
        if i < len(times) - 1:
            y = y + (t2 - t1) * ((pred - y) / (1.0 - t1))
    kept = y0.clone()
    assert torch.equal(euler_endpoint_sampler(net, y0, times), pred)
    assert torch.equal(y0, kept)  # the caller's array is not changed by default
    assert torch.equal(euler_endpoint_sampler(net, y0.clone(), times, overwrite=True), pred)
    # a network that returns its input unchanged (sharing memory) still integrates correctly
    ident = euler_endpoint_sampler(lambda y, t: y, y0, times)
    assert torch.equal(ident, y0)


def test_training_path_and_loss():
    torch.manual_seed(0)
    enc = Recorder(12, 5)
    batch = toy_batch()
    out = FlowGenerator().loss(enc, batch, ZeroPrior(5))
    t = enc.times[0]
    assert 0.0 <= t < 1.0
    # zero prior: Y_t = t * Y for the first slide
    n0 = int(batch.ptr[1])
    assert torch.allclose(enc.states[0][:n0], t * batch.y[:n0], atol=1e-6)
    assert out.loss.item() == pytest.approx(((2.0 - batch.y) ** 2).mean().item(), rel=1e-5)


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule"):
        FlowGenerator(schedule="fast")
