"""Hydra composition of ``stgen run`` configs from override strings.

``compose_run(["encoder=gnn", "trainer.max_epochs=3"])`` returns the resolved config; every
invalid name, key or value raises :class:`ConfigError` (one message with the valid choices) before
any work starts. ``expand_sweep`` turns multirun overrides (``encoder=gnn,mlp``) into the list of
single-run override lists, using Hydra's own override parser.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from stgen.config.schema import DEFAULTS, register_configs
from stgen.registry import REGISTRIES, Registry, unknown_name_message

CONFIG_DIR = Path(__file__).parent

#: settings that live elsewhere: typing the old key is an error naming the one place it is set
MOVED_KEYS: dict[str, str] = {
    "data.k": "k is set with encoder.k (the encoder declares the graph it reads; the data and prediction "
              "build exactly that graph), e.g. encoder.k=12",
    "eval.n_samples": "n_samples is set with generator.n_samples (used in validation, test and recorded in the "
                      "checkpoint; `stgen predict --n-samples` overrides it), e.g. generator.n_samples=8",
    "eval.steps": "steps is set with generator.steps (used in validation, test and recorded in the checkpoint; "
                  "`stgen predict --steps` overrides it), e.g. generator.steps=10",
}


class ConfigError(ValueError):
    """An invalid override: unknown name, unknown key or ill-typed value."""


def _group_registries() -> dict[str, Registry]:
    return REGISTRIES


def presets() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "preset").glob("*.yaml"))


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {exc}") from None


def _check_choice(group: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        kind = REGISTRIES[group].kind if group in REGISTRIES else group
        raise ConfigError(unknown_name_message(kind, value, list(valid)))


def _precheck(overrides: Sequence[str]) -> None:
    """Moved keys name their one home; unknown component names get the registry's message."""
    regs = _group_registries()
    for ov in _parse(overrides):
        key = ov.get_key_element().lstrip("+~")
        if key in MOVED_KEYS:
            raise ConfigError(f"{key} is not a setting: {MOVED_KEYS[key]}")
        if key in regs or key == "preset":
            valid = presets() if key == "preset" else regs[key].names()
            values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
            for v in values:
                if v in ("null", "None") and key in ("features", "preset"):
                    continue
                _check_choice(key, v, valid)


def default_choices() -> dict[str, str]:
    """The default component of each group (STFlow when its components are installed)."""
    from stgen.config.schema import FALLBACK_DEFAULTS

    regs = _group_registries()
    out = {}
    for group, name in DEFAULTS.items():
        out[group] = name if name in regs[group] else FALLBACK_DEFAULTS[group]
    return out


def compose_run(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose and validate the config of one run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    _precheck(overrides)
    register_configs()
    choices = default_choices()
    # defaults are given as overrides so plugins can change them without YAML
    base = [f"{g}={v}" for g, v in choices.items()
            if not any(o.split("=")[0].lstrip("+~") == g for o in overrides)]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="stgen"):
            cfg = compose(config_name="run", overrides=base + overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_clean_message(exc, overrides)) from None
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, True)
    return cfg


def _clean_message(exc: Exception, overrides: Sequence[str]) -> str:
    """One readable message for a Hydra/OmegaConf composition error."""
    import re

    msg = str(exc).strip()
    m = re.search(r"Could not override '([^']+)'", msg)
    if m:
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        valid = _valid_keys(parent, overrides)
        where = f"'{parent}'" if parent else "the run config"
        return (f"unknown key {leaf!r} in {where} (override {key!r}). Valid keys: {', '.join(valid)}."
                + (" Run `stgen describe <group> <name>` for a component's parameters."
                   if parent.split(".")[0] in _group_registries() else ""))
    cause = exc.__cause__ or exc.__context__
    if "Error merging override" in msg and cause is not None:
        detail = str(cause).splitlines()[0]
        return f"{msg.splitlines()[0].replace('Error merging override', 'invalid value in override')}: {detail}"
    return msg


def _valid_keys(parent: str, overrides: Sequence[str]) -> list[str]:
    """Keys of the config node ``parent`` as composed without the offending override."""
    if not parent:
        from stgen.config.schema import RunConfig

        return sorted(RunConfig.__dataclass_fields__)
    group = parent.split(".")[0]
    regs = _group_registries()
    if group in regs and "." not in parent:
        chosen = default_choices().get(group)
        for o in overrides:
            k, _, v = o.partition("=")
            if k.lstrip("+~") == group:
                chosen = v
        if chosen and chosen in regs[group]:
            return ["name", *[p.name for p in regs[group].get(chosen).params()]]
    from stgen.config.schema import RunConfig

    field = RunConfig.__dataclass_fields__.get(parent)
    if field is not None and field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return sorted(field.default_factory().__dataclass_fields__)  # type: ignore[misc]
    return []


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """All single-run override lists of a multirun (cartesian product of the sweeps)."""
    parsed = _parse(overrides)
    axes: list[list[str]] = []
    for ov, raw in zip(parsed, overrides, strict=True):
        if ov.is_sweep_override():
            key = ov.get_key_element()
            axes.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        else:
            axes.append([raw])
    return [list(combo) for combo in itertools.product(*axes)]
