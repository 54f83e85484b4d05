"""The generator contract: a training loss and a sampler over any encoder and prior."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.data import Batch

from stgen.components import Configurable
from stgen.encoders.base import Encoder
from stgen.priors.base import Prior
from stgen.registry import GENERATORS


@dataclass
class LossOutput:
    """What a generator's training step returns.

    Args:
        loss: scalar to minimise.
        pred: the encoder's clean-expression prediction ``[N, G]`` (for logging), when there is one.
        target: the clean target ``[N, G]``.
    """

    loss: Tensor
    pred: Tensor | None = None
    target: Tensor | None = None


@dataclass
class SampleOutput:
    """A prediction for a batch of slides.

    Args:
        mean: mean over samples ``[N, G]`` (log1p space).
        std: predictive standard deviation ``[N, G]``: the spread over samples, plus the variance a
            likelihood head predicts (``generator=regression generator.likelihood=gaussian``) when there is
            one; ``None`` when one sample was drawn from a generator without such a head.
        n_samples: number of samples behind ``mean``.
    """

    mean: Tensor
    std: Tensor | None
    n_samples: int


class Generator(Configurable, ABC):
    """Base class of every generator (not an ``nn.Module``: it owns no weights).

    Subclasses implement :meth:`loss` and :meth:`sample`. :meth:`predict` (the base class) draws
    ``n_samples`` samples with distinct seeds and returns their mean and spread. A generator whose
    encoder output holds more than one value per gene (e.g. a mean and a log-variance) says so with
    :meth:`encoder_out_dim`; one that predicts its own variance returns it from :meth:`sample_moments`,
    and :meth:`predict` then reports the total variance (mean of the predicted variances plus the
    variance of the means over samples).

    Args:
        steps: default number of sampling steps (ignored by one-shot generators).
        n_samples: samples drawn per slide at prediction time (mean and std are returned).

    Shapes:
        sample: ``[N, G]`` for a batch with N spots in total.
    """

    #: whether the prior shapes the output (False for one-shot regression, which ignores it)
    uses_prior: ClassVar[bool] = True

    def __init__(self, steps: int = 1, n_samples: int = 1) -> None:
        if steps < 1:
            raise ValueError(f"{type(self).__name__}: steps must be >= 1, got {steps}")
        if n_samples < 1:
            raise ValueError(f"{type(self).__name__}: n_samples must be >= 1, got {n_samples}")
        self.steps = steps
        self.n_samples = n_samples

    @abstractmethod
    def loss(self, encoder: Encoder, batch: Batch, prior: Prior) -> LossOutput:
        """Training loss for one batch of slides (or crops)."""

    @abstractmethod
    def sample(
        self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None, seed: int | None = None
    ) -> Tensor:
        """One sample ``[N, G]`` of the whole batch."""

    def encoder_out_dim(self, n_genes: int) -> int:
        """Width of the encoder output this generator reads for a panel of ``n_genes`` genes.

        The model builder sizes the encoder with it (default: one value per gene).
        """
        return n_genes

    def sample_moments(self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None,
                       seed: int | None = None) -> tuple[Tensor, Tensor | None]:
        """One draw of the predicted mean ``[N, G]`` and the variance the model predicts around it (None:
        the generator predicts none, the default: the draw is :meth:`sample`)."""
        return self.sample(encoder, batch, prior, steps=steps, seed=seed), None

    @torch.no_grad()
    def predict(
        self,
        encoder: Encoder,
        batch: Batch,
        prior: Prior,
        steps: int | None = None,
        seed: int | None = 0,
        n_samples: int | None = None,
    ) -> SampleOutput:
        n = n_samples or self.n_samples
        if n == 1:  # one draw is the mean: no stacked copy of a whole-slide array
            mean, var1 = self.sample_moments(encoder, batch, prior, steps=steps, seed=seed)
            return SampleOutput(mean=mean, std=None if var1 is None else var1.sqrt(), n_samples=1)
        draws, variances = [], []
        for i in range(n):
            s = None if seed is None else seed + i
            m, v = self.sample_moments(encoder, batch, prior, steps=steps, seed=s)
            draws.append(m)
            variances.append(v)
        stack = torch.stack(draws)
        var = stack.var(dim=0, unbiased=True)
        if all(v is not None for v in variances):  # law of total variance over the draws
            within = torch.stack(variances).mean(dim=0)  # type: ignore[arg-type]
            var = within if var is None else var + within
        std = None if var is None else var.sqrt()
        return SampleOutput(mean=stack.mean(dim=0), std=std, n_samples=n)

    def __repr__(self) -> str:
        args = ", ".join(f"{p.name}={getattr(self, p.name, p.default)!r}" for p in self.params())
        return f"{type(self).__name__}({args})"


def make_generator(seed: int | None) -> torch.Generator | None:
    """A CPU ``torch.Generator`` seeded with ``seed``, or None for the global RNG."""
    if seed is None:
        return None
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def state_like(batch: Batch) -> Tensor:
    """An empty tensor with the device and dtype of the sampler's state: the features' device, float32
    (float64 when the features are float64; half-precision features still give a float32 state)."""
    x = batch.x
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    return torch.empty(0, device=x.device, dtype=dtype)


def prior_sample(prior: Prior, batch: Batch, n_genes: int, seed: int | None, like: Tensor) -> Tensor:
    """A prior sample for every spot of ``batch``, on ``like``'s device and dtype."""
    y0 = prior.sample((batch.num_nodes, n_genes), generator=make_generator(seed))
    return y0.to(device=like.device, dtype=like.dtype)


GENERATORS.set_base(Generator)
