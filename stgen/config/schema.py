"""Structured config: the run schema, and config groups generated from the registries.

The groups ``encoder``, ``generator``, ``prior``, ``features`` and ``data`` get one structured config
per registered component, derived from its constructor signature, so an installed plugin is
selectable by name without YAML of its own. OmegaConf's struct mode and type checking turn unknown
keys and ill-typed values into errors before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from stgen.registry import REGISTRIES, Registry

DEFAULTS = {"encoder": "fa_local", "generator": "flow", "prior": "zinb", "data": "simulated"}
FALLBACK_DEFAULTS = {"encoder": "gnn", "generator": "regression", "prior": "gaussian"}


@dataclass
class TrainerConfig:
    """Passed through to ``lightning.Trainer`` (plus early-stopping patience)."""

    max_epochs: int = 20
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    gradient_clip_val: Optional[float] = 1.0  # noqa: UP045 - OmegaConf needs typing.Optional
    patience: int = 20
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    check_val_every_n_epoch: int = 1
    deterministic: bool = False


@dataclass
class OptimConfig:
    """Adam optimiser."""

    lr: float = 5e-4
    weight_decay: float = 0.0


@dataclass
class TrainConfig:
    """How training batches are drawn.

    ``crops_per_slide`` random crops per training slide per epoch (0: whole slides), ``batch_size``
    crops (or slides) per step; a crop keeps ``max(2, floor(r N))`` spots nearest to a random centre
    with ``r ~ U(crop_min, 1)``.
    """

    crops_per_slide: int = 10
    batch_size: int = 2
    crop_min: float = 0.0
    num_workers: int = 0


@dataclass
class EvalConfig:
    """Evaluation at validation/test time and model selection.

    Sampling steps and samples per slide are the generator's (``generator.steps``,
    ``generator.n_samples``: one setting, recorded in the checkpoint). ``seed`` fixes the prior samples
    of evaluation; ``select_on=test`` reproduces the released STFlow code's selection of the best epoch
    on the test fold and is labelled as such in every output. ``ridge`` also scores HEST's ridge probe on
    the same features and folds (``ridge_pearson``). ``recalibrate`` fits a per-gene scale of the
    predicted spread on the validation slides after training (when the model has a spread and
    ``select_on=val``), stores it in ``best.ckpt`` and applies it at test and prediction time
    (:mod:`stgen.recalibrate`).
    """

    seed: int = 0
    select_on: str = "val"
    ridge: bool = True
    recalibrate: bool = True


@dataclass
class PreprocessConfig:
    """Input standardisation and expression targets (see :mod:`stgen.preprocess`).

    ``standardize`` centres and scales each patch-embedding column with statistics of the training
    slides (stored in the checkpoint); ``target`` is ``log1p`` (raw counts, HEST-Bench) or
    ``log1p_cp10k`` (counts per 10k: slides of different sequencing depth).
    """

    standardize: bool = True
    target: str = "log1p"


@dataclass
class RunConfig:
    """Top-level schema of ``stgen run``."""

    encoder: Any = None
    generator: Any = None
    prior: Any = None
    features: Any = None
    data: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    seed: int = 0
    output_dir: Optional[str] = None  # noqa: UP045
    ckpt_path: Optional[str] = None  # noqa: UP045
    resume: Optional[str] = None  # noqa: UP045 - an interrupted run's <out>.incomplete folder
    preset: Optional[str] = None  # noqa: UP045


_SIMPLE = (int, float, bool, str)


def omegaconf_type(annotation: Any, default: Any) -> Any:
    """Map a constructor annotation to a type OmegaConf can check (``Any`` when it cannot)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and args[0] in _SIMPLE:
            return Optional[args[0]]  # noqa: UP045
        return Any
    if annotation in _SIMPLE:
        if default is None:
            return Optional[annotation]  # noqa: UP045
        return annotation
    if origin in (list, tuple, typing.List, typing.Tuple):  # noqa: UP006
        return Any
    return Any


def component_dataclass(group: str, name: str, cls: type) -> type:
    """A dataclass with ``name`` plus one field per configurable constructor parameter of ``cls``."""
    fields: list[tuple[str, Any, Any]] = [("name", str, field(default=name))]
    for p in cls.params():  # type: ignore[attr-defined]
        default = p.default
        if default is inspect.Parameter.empty:
            continue
        typ = omegaconf_type(p.annotation, default)
        if isinstance(default, (list, dict, tuple)):
            fields.append((p.name, Any, field(default_factory=lambda d=default: type(d)(d))))
        else:
            fields.append((p.name, typ, field(default=default)))
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)
    return dataclasses.make_dataclass(f"{group.capitalize()}_{safe}_Config", fields)


def register_configs(groups: dict[str, Registry] | None = None) -> ConfigStore:
    """Store the run schema and one config per registered component (every registry) in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="stgen_run_schema", node=RunConfig)
    for group, registry in (REGISTRIES if groups is None else groups).items():
        for entry in registry.entries():
            cs.store(group=group, name=entry.name, node=component_dataclass(group, entry.name, entry.obj))
    return cs
