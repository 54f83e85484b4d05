"""The Python API behind ``stgen.load``, ``stgen.list_components`` and ``stgen.create_model``.

timm-style: components are chosen by registry name, a model is created from names plus parameters,
and a trained model is loaded from its checkpoint (which records everything prediction needs: the
model spec with the encoder's graph ``k`` and the generator's sampling settings, and the gene panel).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stgen.lit import STGenLightning
    from stgen.model import STGenModel


def load(checkpoint: str | Path, map_location: str = "cpu") -> STGenLightning:
    """Load a trained model (in eval mode) from a checkpoint written by ``stgen run``.

    Args:
        checkpoint: ``<run>/checkpoints/best.ckpt`` (or any checkpoint of a run).
        map_location: device the weights are loaded onto.

    Returns:
        the trained module: ``.model`` (encoder, generator, prior), ``.genes`` (the gene panel) and
        ``.hparams`` (model spec, feature width, component packages). Pass it to :func:`stgen.tl.predict`.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        stgen.registry.RegistryError: it needs a component whose package is not installed (named).
    """
    from stgen.predict import load_module

    return load_module(checkpoint, map_location=map_location)


def list_components(kind: str | None = None, filter: str = "*") -> list[str]:  # noqa: A002 - timm's name
    """Registered component names, sorted (like ``timm.list_models``).

    Args:
        kind: ``encoder``, ``generator``, ``prior``, ``features`` or ``data`` (aliases such as ``encoders``
            work). None lists every kind, as ``"kind/name"``.
        filter: shell-style pattern on the name, e.g. ``"fa_*"``.

    Raises:
        stgen.registry.RegistryError: unknown kind (the valid kinds are listed).
    """
    from stgen.registry import REGISTRIES, resolve_kind

    if kind is not None:
        return [n for n in REGISTRIES[resolve_kind(kind)].names() if fnmatch.fnmatch(n, filter)]
    return [f"{k}/{n}" for k, reg in REGISTRIES.items() for n in reg.names() if fnmatch.fnmatch(n, filter)]


def create_model(encoder: str | Mapping[str, Any] = "fa_local", *, in_dim: int, n_genes: int,
                 generator: str | Mapping[str, Any] = "flow", prior: str | Mapping[str, Any] = "zinb",
                 **encoder_args: Any) -> STGenModel:
    """An untrained model from registry names (like ``timm.create_model``).

    Args:
        encoder: encoder name, or ``{"name": ..., **params}``.
        in_dim: patch-embedding width F.
        n_genes: gene-panel size G.
        generator: generator name or ``{"name": ..., **params}`` (e.g. ``{"name": "flow", "n_samples": 8}``).
        prior: prior name or ``{"name": ..., **params}``.
        encoder_args: encoder parameters (e.g. ``k=12``, ``hidden_dim=64``); unknown ones are an error.

    Returns:
        an :class:`stgen.model.STGenModel`; its encoder's ``graph_k`` is the graph it reads.
    """
    from stgen.build import build_model

    def spec(value: str | Mapping[str, Any], extra: Mapping[str, Any] = {}) -> dict[str, Any]:  # noqa: B006
        out = {"name": value} if isinstance(value, str) else dict(value)
        return {**out, **extra}

    return build_model({"encoder": spec(encoder, encoder_args), "generator": spec(generator), "prior": spec(prior)},
                       in_dim=in_dim, n_genes=n_genes)
