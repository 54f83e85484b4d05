from __future__ import annotations

import sys
import textwrap

import pytest

from stgen.encoders.base import Encoder
from stgen.encoders.mlp import MLPEncoder
from stgen.registry import ENCODERS, PRIORS, Registry, RegistryError


def fresh() -> Registry:
    return Registry("encoder", "stgen.test_encoders_group", base=Encoder)


def test_builtins_registered():
    assert {"mlp", "gnn"} <= set(ENCODERS.names())
    assert {"gaussian", "zero"} <= set(PRIORS.names())
    assert ENCODERS.entry("gnn").source == "stgen"


def test_duplicate_name_names_both_sources():
    reg = fresh()
    reg.add("thing", MLPEncoder, source="pkg_a")

    class Other(MLPEncoder):
        pass

    with pytest.raises(RegistryError) as err:
        reg.add("thing", Other, source="pkg_b")
    assert "pkg_a" in str(err.value) and "pkg_b" in str(err.value)
    reg.add("thing", MLPEncoder, source="pkg_a")  # the same object again is not a duplicate


def test_unknown_name_lists_valid_and_suggests():
    with pytest.raises(RegistryError) as err:
        ENCODERS.get("gnm")
    msg = str(err.value)
    assert "gnn" in msg and "mlp" in msg and "Did you mean 'gnn'" in msg


def test_rejects_component_that_breaks_the_contract():
    reg = fresh()
    with pytest.raises(RegistryError, match="not a subclass"):
        reg.add("bad", dict)

    class NoHook(Encoder):
        pass

    with pytest.raises(RegistryError, match="does not implement denoise"):
        reg.add("nohook", NoHook)

    class NoDefault(MLPEncoder):
        def __init__(self, in_dim: int, out_dim: int, width: int) -> None:
            super().__init__(in_dim, out_dim)

    with pytest.raises(RegistryError, match="needs a default"):
        reg.add("nodefault", NoDefault)

    class NoDataArgs(MLPEncoder):
        def __init__(self, hidden_dim: int = 3) -> None:
            super().__init__(1, 1)

    with pytest.raises(RegistryError, match="in_dim"):
        reg.add("nodata", NoDataArgs)


def _make_dist(tmp_path, dist: str, module: str, group: str, entries: dict[str, str], body: str):
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
    info = tmp_path / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")


def test_entry_point_discovery_and_failure_isolation(tmp_path, monkeypatch):
    group = "stgen.test_encoders_group"
    _make_dist(tmp_path, "ext-encoders", "ext_encoders_mod", group,
               {"ext_mlp": "ext_encoders_mod:ExtEncoder", "broken": "ext_encoders_missing:Nope"},
               """
               from stgen.encoders.mlp import MLPEncoder

               class ExtEncoder(MLPEncoder):
                   '''An encoder from another package.'''
               """)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = fresh()
    with pytest.warns(RuntimeWarning, match="broken.*ext-encoders"):
        names = reg.names()
    assert "ext_mlp" in names and "broken" not in names
    assert reg.entry("ext_mlp").source == "ext-encoders"
    with pytest.raises(RegistryError, match="failed to load"):
        reg.get("broken")
    sys.modules.pop("ext_encoders_mod", None)


def test_entry_point_duplicate_of_builtin_is_an_error(tmp_path, monkeypatch):
    group = "stgen.test_encoders_group"
    _make_dist(tmp_path, "ext-dup", "ext_dup_mod", group, {"mlp": "ext_dup_mod:Dup"},
               """
               from stgen.encoders.mlp import MLPEncoder

               class Dup(MLPEncoder):
                   pass
               """)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = fresh()
    reg.add("mlp", MLPEncoder, source="stgen")
    with pytest.raises(RegistryError, match="duplicate encoder name 'mlp'.*stgen.*ext-dup"):
        reg.names()
    sys.modules.pop("ext_dup_mod", None)


def test_one_table_names_every_registry_and_alias():
    from stgen.config import _group_registries
    from stgen.model import KINDS as MODEL_REGISTRIES
    from stgen.registry import KIND_TABLE, MODEL_KINDS, REGISTRIES, resolve_kind

    assert list(REGISTRIES) == [k.name for k in KIND_TABLE]
    assert _group_registries() is REGISTRIES  # config groups come from the table
    assert list(MODEL_REGISTRIES) == list(MODEL_KINDS) == ["encoder", "generator", "prior"]
    for kind in KIND_TABLE:
        assert REGISTRIES[kind.name].group == kind.group and REGISTRIES[kind.name].kind == kind.label
        assert resolve_kind(kind.name) == kind.name
        for alias in kind.aliases:
            assert resolve_kind(alias) == kind.name
    with pytest.raises(RegistryError, match="Did you mean 'encoder'"):
        resolve_kind("encodr")


def test_config_and_registry_give_the_same_unknown_name_message():
    from stgen.config import ConfigError, compose_run

    with pytest.raises(RegistryError) as from_registry:
        ENCODERS.get("gnm")
    with pytest.raises(ConfigError) as from_config:
        compose_run(["encoder=gnm"])
    assert str(from_config.value) == str(from_registry.value)


def test_param_docs_come_from_the_class_docstring():
    from stgen.components import args_doc
    from stgen.encoders.gnn import GNNEncoder

    docs = {p.name: p.doc for p in GNNEncoder.params()}
    assert docs["hidden_dim"] and docs["k"].startswith("neighbours per spot")

    class Documented:
        """Summary.

        Args:
            a, b: shared text
                that continues.
            c (int): typed.

        Shapes:
            d: not a parameter.
        """

    assert args_doc(Documented) == {"a": "shared text that continues.", "b": "shared text that continues.",
                                    "c": "typed."}
