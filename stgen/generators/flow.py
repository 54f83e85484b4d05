"""Whole-slide flow matching (STFlow): linear path from the prior, endpoint prediction, Euler sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, LossOutput, prior_sample, state_like
from stgen.priors.base import Prior
from stgen.registry import GENERATORS

SCHEDULES = ("code", "paper")


def flow_times(steps: int, schedule: str = "code") -> list[tuple[float, float]]:
    """The (t1, t2) pairs at which the sampler calls the network.

    ``code`` (default, the released implementation): ``linspace(0.01, 1, steps)``, one call per
    consecutive pair, so ``steps - 1`` calls (``steps = 5``: t = 0.01, 0.2575, 0.505, 0.7525);
    ``steps = 1`` degenerates to one call at t = 0.01.
    ``paper`` (Algorithm 2): ``t1 = s / steps``, ``t2 = (s + 1) / steps`` for ``s = 0 .. steps - 1``.
    """
    if schedule == "code":
        if steps == 1:
            return [(0.01, 1.0)]
        grid = torch.linspace(0.01, 1.0, steps, dtype=torch.float64).tolist()
        return list(zip(grid[:-1], grid[1:], strict=True))
    if schedule == "paper":
        return [(s / steps, (s + 1) / steps) for s in range(steps)]
    raise ValueError(f"unknown flow schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def euler_endpoint_sampler(
    net: Callable[[Tensor, float], Tensor], y0: Tensor, times: list[tuple[float, float]],
    overwrite: bool = False,
) -> Tensor:
    """Integrate ``dy/dt = (net(y, t) - y) / (1 - t)`` along ``times``; return the last endpoint prediction.

    Each step is ``y <- y + (t2 - t1) * (pred - y) / (1 - t1)``, computed in place (the same operations in
    the same order, so the same values): besides the state only the network's prediction is alive, two
    ``[N, G]`` arrays in all. With ``overwrite`` the state starts in ``y0`` itself (the caller's array is
    changed); otherwise in a copy of it. A prediction that shares memory with the state is copied first.
    """
    y = y0 if overwrite else y0.clone()
    for i, (t1, t2) in enumerate(times):
        pred = net(y, t1)
        if i == len(times) - 1:
            return pred
        if pred.untyped_storage().data_ptr() == y.untyped_storage().data_ptr():
            pred = pred.clone()
        y.add_(pred.sub_(y).div_(1.0 - t1).mul_(t2 - t1))
        del pred  # freed before the next call allocates its prediction
    return y


@GENERATORS.register("flow")
class FlowGenerator(Generator):
    """Flow matching with endpoint prediction.

    Training: one ``t ~ U[0, 1)`` per slide (crop), ``Y_t = (1 - t) Y0 + t Y`` with ``Y0`` from the
    prior, the encoder predicts ``Y`` from ``Y_t``, loss = MSE over spots and genes.
    Sampling: see :func:`flow_times`; the output is the last endpoint prediction.

    Args:
        steps: S, the number of grid points (``code`` schedule: S - 1 network calls).
        n_samples: samples per slide at prediction time (mean and std are returned).
        schedule: ``code`` (default) or ``paper`` (Algorithm 2, S calls).

    Shapes:
        sample: ``[N, G]``.
    """

    def __init__(self, steps: int = 5, n_samples: int = 1, schedule: str = "code") -> None:
        super().__init__(steps=steps, n_samples=n_samples)
        if schedule not in SCHEDULES:
            raise ValueError(f"flow generator: unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.schedule = schedule

    def loss(self, encoder: Encoder, batch: Batch, prior: Prior) -> LossOutput:
        y = batch.y
        y0 = prior_sample(prior, batch, y.shape[1], seed=None, like=y)
        t = torch.rand(batch.num_graphs, device=y.device, dtype=y.dtype)
        tn = t[batch.batch][:, None]
        yt = (1 - tn) * y0 + tn * y
        pred = encoder(batch, yt, t)
        return LossOutput(loss=F.mse_loss(pred, y), pred=pred, target=y)

    def sample(self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None,
               seed: int | None = None) -> Tensor:
        like = state_like(batch)
        y0 = prior_sample(prior, batch, encoder.out_dim, seed, like)
        context = encoder.prepare(batch)
        b = batch.num_graphs

        def net(y: Tensor, t: float) -> Tensor:
            return encoder(batch, y, torch.full((b,), t, device=y.device, dtype=y.dtype), context)

        return euler_endpoint_sampler(net, y0, flow_times(steps or self.steps, self.schedule), overwrite=True)

