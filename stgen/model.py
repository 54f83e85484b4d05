"""``build_model``: the one place a model spec (plain data) becomes objects. No Lightning here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, LossOutput, SampleOutput
from stgen.preprocess import FeatureScaler, scaled_batch
from stgen.priors.base import Prior
from stgen.registry import MODEL_KINDS, REGISTRIES, Registry, RegistryError

#: the registries of a model spec (derived from the registry table)
KINDS: dict[str, Registry] = {kind: REGISTRIES[kind] for kind in MODEL_KINDS}


class STGenModel(nn.Module):
    """Input scaler + encoder + generator + prior.

    Args:
        encoder: the denoiser network.
        generator: training loss and sampler.
        prior: source distribution.
        scaler: standardisation of ``batch.x`` applied before every encoder call (default: identity).

    Shapes:
        loss(batch) uses ``batch.y [N, G]``; predict(batch) -> ``SampleOutput`` with ``mean [N, G]``.
    """

    def __init__(self, encoder: Encoder, generator: Generator, prior: Prior,
                 scaler: FeatureScaler | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.prior = prior
        self.scaler = scaler if scaler is not None else FeatureScaler(encoder.in_dim, enabled=False)

    def inputs(self, batch: Batch) -> Batch:
        """``batch`` with standardised features (a shallow copy; the identity when the scaler is off)."""
        return scaled_batch(batch, self.scaler)

    def loss(self, batch: Batch) -> LossOutput:
        return self.generator.loss(self.encoder, self.inputs(batch), self.prior)

    def predict(self, batch: Batch, steps: int | None = None, seed: int | None = 0,
                n_samples: int | None = None) -> SampleOutput:
        return self.generator.predict(self.encoder, self.inputs(batch), self.prior, steps=steps, seed=seed,
                                      n_samples=n_samples)


@dataclass
class ComponentSpec:
    """A component by registry name plus its constructor parameters (no data-derived sizes)."""

    kind: str
    name: str
    params: dict[str, Any]

    @classmethod
    def from_config(cls, kind: str, cfg: Mapping[str, Any]) -> ComponentSpec:
        cfg = dict(cfg)
        name = cfg.pop("name", None)
        if not name:
            raise RegistryError(f"{kind} config has no 'name'; choose one of {', '.join(KINDS[kind].names())}")
        return cls(kind, str(name), cfg)


def build_component(kind: str, spec: Mapping[str, Any], **data_args: Any) -> Any:
    """Instantiate one component from ``{"name": ..., **params}`` plus data-derived sizes."""
    cs = ComponentSpec.from_config(kind, spec)
    cls = KINDS[kind].get(cs.name)
    known = {p.name for p in cls.params()}
    unknown = sorted(set(cs.params) - known)
    if unknown:
        raise RegistryError(
            f"{kind} {cs.name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known)) or 'none'}"
        )
    wanted = {a: data_args[a] for a in cls.data_args if a in data_args}
    return cls(**wanted, **cs.params)


def graph_k(spec: Mapping[str, Mapping[str, Any]]) -> int | None:
    """Neighbours per spot of the graph the spec's encoder reads (None: it reads no graph).

    The one place data modules and prediction learn ``k``: from the encoder's own parameter
    (``encoder.k``), as recorded in the model spec of a run or a checkpoint.
    """
    cs = ComponentSpec.from_config("encoder", spec["encoder"])
    cls = KINDS["encoder"].get(cs.name)
    return cls.graph_k_from(cs.params)


def model_sources(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Which package provides each component of ``spec`` (recorded in checkpoints)."""
    out = {}
    for kind in KINDS:
        entry = KINDS[kind].entry(str(spec[kind]["name"]))
        out[kind] = {"name": entry.name, "source": entry.source, "origin": entry.origin}
    return out


def build_model(spec: Mapping[str, Mapping[str, Any]], in_dim: int, n_genes: int,
                standardize: bool = False) -> STGenModel:
    """Build encoder, generator and prior from plain data; F and G come from the data.

    Args:
        spec: ``{"encoder": {"name": "fa_local", ...}, "generator": {...}, "prior": {...}}``.
        in_dim: patch-embedding width F.
        n_genes: gene-panel size G.
        standardize: give the model an input scaler (fitted later on the training slides).
    """
    missing = [k for k in KINDS if k not in spec or spec[k] is None]
    if missing:
        raise RegistryError(f"model spec lacks {', '.join(missing)}")
    encoder = build_component("encoder", spec["encoder"], in_dim=in_dim, out_dim=n_genes)
    generator = build_component("generator", spec["generator"])
    prior = build_component("prior", spec["prior"], n_genes=n_genes)
    return STGenModel(encoder, generator, prior, scaler=FeatureScaler(in_dim, enabled=standardize))
