"""DDPM training with x0-prediction and deterministic DDIM sampling."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, LossOutput, prior_sample, state_like
from stgen.priors.base import Prior
from stgen.registry import GENERATORS


def cosine_alpha_bar(t: Tensor, s: float = 0.008) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal) in stgen's time convention: t = 0 is noise, t = 1 is data.

    ``alpha_bar(t) = cos^2(pi/2 * (1 - t + s) / (1 + s)) / cos^2(pi/2 * s / (1 + s))``, clamped to
    ``[1e-4, 1]``.
    """
    f = torch.cos(math.pi / 2 * (1 - t + s) / (1 + s)) ** 2
    f0 = math.cos(math.pi / 2 * s / (1 + s)) ** 2
    return (f / f0).clamp(1e-4, 1.0)


@GENERATORS.register("diffusion")
class DiffusionGenerator(Generator):
    """Variance-preserving diffusion with a cosine schedule, x0-prediction, DDIM (eta = 0) sampling.

    Why x0-prediction: the encoder contract returns clean expression for every generator, so the same
    network (and the same per-layer gene heads of fa_local) serves flow, regression and diffusion,
    and the loss is the same MSE in log1p space. The noise ``eps`` is drawn from the configured prior
    (Gaussian is the classic DDPM; ZINB/zero give the matching ablations); the noisy state is
    ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps``, with time running from 0 (noise) to 1 (data) as in
    the flow generator, so the time embedding means the same thing.
    DDIM step from t1 to t2: ``eps_hat = (x_t1 - sqrt(ab1) x0_hat) / sqrt(1 - ab1)``,
    ``x_t2 = sqrt(ab2) x0_hat + sqrt(1 - ab2) eps_hat``; the output is the last ``x0_hat``.

    Args:
        steps: network calls at sampling time (uniform grid from t = 0 to 1).
        n_samples: samples per slide at prediction time.
        t_min: smallest training/sampling time (avoids alpha_bar = 0 exactly).

    Shapes:
        sample: ``[N, G]``.
    """

    def __init__(self, steps: int = 10, n_samples: int = 1, t_min: float = 0.0) -> None:
        super().__init__(steps=steps, n_samples=n_samples)
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"diffusion generator: t_min must be in [0, 1), got {t_min}")
        self.t_min = t_min

    def loss(self, encoder: Encoder, batch: Batch, prior: Prior) -> LossOutput:
        x0 = batch.y
        eps = prior_sample(prior, batch, x0.shape[1], seed=None, like=x0)
        t = self.t_min + (1 - self.t_min) * torch.rand(batch.num_graphs, device=x0.device, dtype=x0.dtype)
        ab = cosine_alpha_bar(t)[batch.batch][:, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        pred = encoder(batch, xt, t)
        return LossOutput(loss=F.mse_loss(pred, x0), pred=pred, target=x0)

    def sample(self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None,
               seed: int | None = None) -> Tensor:
        n_steps = steps or self.steps
        like = state_like(batch)
        x = prior_sample(prior, batch, encoder.out_dim, seed, like)
        context = encoder.prepare(batch)
        b = batch.num_graphs
        grid = torch.linspace(self.t_min, 1.0, n_steps + 1, dtype=torch.float64).tolist()
        # start from pure noise: alpha_bar(t_min) ~ 0, so x ~ sqrt(1 - ab) eps
        ab0 = float(cosine_alpha_bar(torch.tensor(grid[0])))
        x = math.sqrt(1 - ab0) * x
        x0_hat = x
        for i in range(n_steps):
            t1, t2 = grid[i], grid[i + 1]
            tt = torch.full((b,), t1, device=x.device, dtype=x.dtype)
            x0_hat = encoder(batch, x, tt, context)
            if i == n_steps - 1:
                break
            ab1 = float(cosine_alpha_bar(torch.tensor(t1)))
            ab2 = float(cosine_alpha_bar(torch.tensor(t2)))
            eps_hat = (x - math.sqrt(ab1) * x0_hat) / math.sqrt(1 - ab1)
            x = math.sqrt(ab2) * x0_hat + math.sqrt(1 - ab2) * eps_hat
        return x0_hat
