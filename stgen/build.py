"""The one module where configuration becomes objects: the model, the data, the Trainer.

Components never read config objects: these builders turn plain data or the composed run config into
the objects, injecting the data-derived sizes (F, G) and the graph the encoder declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stgen.data.source import DATASETS, DataBundle
from stgen.errors import ConfigInputError, DataInputError, MissingInputError
from stgen.model import KINDS, STGenModel
from stgen.preprocess import FeatureScaler
from stgen.recalibrate import SpreadScale
from stgen.registry import RegistryError


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
    generator = build_component("generator", spec["generator"])
    # the generator says how wide an output it reads (e.g. a mean and a log-variance per gene)
    encoder = build_component("encoder", spec["encoder"], in_dim=in_dim, out_dim=generator.encoder_out_dim(n_genes))
    prior = build_component("prior", spec["prior"], n_genes=n_genes)
    return STGenModel(encoder, generator, prior, scaler=FeatureScaler(in_dim, enabled=standardize),
                      spread_scale=SpreadScale(n_genes))


def model_spec(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("encoder", "generator", "prior")}


def preprocess_spec(cfg: DictConfig) -> Any:
    """The run's :class:`~stgen.preprocess.PreprocessSpec` (standardisation and target)."""
    from stgen.preprocess import PreprocessSpec

    pp = cfg.get("preprocess")
    return PreprocessSpec() if pp is None else PreprocessSpec(standardize=bool(pp.standardize), target=str(pp.target))


def build_data(cfg: DictConfig) -> DataBundle:
    """The one place a data config becomes a :class:`DataBundle`."""
    params = OmegaConf.to_container(cfg.data, resolve=True)
    name = params.pop("name")
    try:
        source = DATASETS.get(name)(**params)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, DataInputError | MissingInputError):
            raise
        raise ConfigInputError(str(exc) if str(exc).startswith("data") else f"data={name}: {exc}") from exc
    features = cfg.get("features")
    bundle = source.load(None if features is None else OmegaConf.to_container(features, resolve=True))
    try:
        bundle.validate()
    except ValueError as exc:
        if isinstance(exc, DataInputError):
            raise
        raise DataInputError(f"data={name}: {exc}") from exc
    return bundle


#: fields of the ``trainer`` config that are not ``lightning.Trainer`` arguments (early stopping reads them)
NOT_TRAINER_ARGS = frozenset({"patience"})


def build_trainer(tcfg: Any, **extra: Any) -> Any:
    """The one place a ``trainer`` config becomes a ``lightning.Trainer``: every field passes through.

    Args:
        tcfg: the ``trainer`` config (:class:`~stgen.config.schema.TrainerConfig` fields).
        extra: arguments the run adds (callbacks, logger, folders); they win over the config.
    """
    import pytorch_lightning as pl

    args = OmegaConf.to_container(tcfg, resolve=True) if isinstance(tcfg, DictConfig) else dict(tcfg)
    return pl.Trainer(**{**{k: v for k, v in args.items() if k not in NOT_TRAINER_ARGS}, **extra})
