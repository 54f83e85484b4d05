"""Registries of interchangeable components, filled by decorators and by entry points.

Built-in components register with ``@ENCODERS.register("name")``. Third-party packages declare an
entry point in one of the groups ``stgen.encoders``, ``stgen.generators``, ``stgen.priors``,
``stgen.features`` (``importlib.metadata`` from the standard library reads them: no extra dependency).
Entry points are loaded lazily, the first time a registry is asked for a name or a listing.

Which registries exist, how each kind is spelled on the command line and in messages, its entry-point
group and the module of its built-ins are written once, in :data:`KIND_TABLE`; everything else
(config groups, ``stgen list``/``describe``, model specs, "did you mean") is derived from it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")

BUILTIN_SOURCE = "stgen"


class RegistryError(KeyError):
    """An unknown, duplicate or invalid component."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Args:
        name: registry key used in configs and on the command line.
        obj: the class (or factory).
        source: the distribution that provides it (``stgen`` for built-ins).
        origin: ``module:qualname`` it was loaded from.
    """

    name: str
    obj: Any
    source: str
    origin: str


def unknown_name_message(kind: str, name: str, valid: list[str], detail: str = "") -> str:
    """The one message for an unknown component name: the valid names and close matches."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{detail}. Valid {kind}s: {', '.join(valid)}.{hint}"


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


class Registry(Generic[T]):
    """A name -> component table with lazy entry-point discovery.

    Args:
        kind: human name of the component kind ("encoder").
        group: entry-point group ("stgen.encoders").
        base: the base class every component must subclass; checked when a component is registered,
            so a plugin that does not satisfy the contract is rejected at load time.
    """

    def __init__(self, kind: str, group: str, base: type | None = None) -> None:
        self.kind = kind
        self.group = group
        self._base = base
        self._entries: dict[str, Entry] = {}
        self._loaded_entry_points = False
        self.load_errors: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def set_base(self, base: type) -> None:
        self._base = base

    def _validate(self, name: str, obj: Any, source: str) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(
                f"invalid {self.kind} name {name!r} from {source}: use letters, digits, '_' or '-'"
            )
        if self._base is not None:
            if not (inspect.isclass(obj) and issubclass(obj, self._base)):
                raise RegistryError(
                    f"{self.kind} {name!r} from {source} ({_origin(obj)}) is not a subclass of "
                    f"{self._base.__module__}.{self._base.__qualname__}; subclass it and implement its "
                    "abstract hook"
                )
            abstract = getattr(obj, "__abstractmethods__", frozenset())
            if abstract:
                raise RegistryError(
                    f"{self.kind} {name!r} from {source} ({_origin(obj)}) does not implement "
                    f"{', '.join(sorted(abstract))}"
                )
            check = getattr(obj, "check_signature", None)
            if check is not None:
                problem = check()
                if problem:
                    raise RegistryError(f"{self.kind} {name!r} from {source} ({_origin(obj)}): {problem}")

    def add(self, name: str, obj: Any, source: str = BUILTIN_SOURCE) -> Any:
        """Register ``obj`` under ``name``; a different object under the same name is an error."""
        self._validate(name, obj, source)
        existing = self._entries.get(name)
        if existing is not None:
            if existing.obj is obj:
                return obj
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: registered by {existing.source} "
                f"({existing.origin}) and again by {source} ({_origin(obj)}); uninstall one of the two "
                "packages or rename its component"
            )
        self._entries[name] = Entry(name, obj, source, _origin(obj))
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@ENCODERS.register("gnn")``."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", "").lower()
            self.add(key, obj, source=_source_of_module(getattr(obj, "__module__", "")))
            return obj

        return deco

    # -- entry points -------------------------------------------------------------------------
    def _entry_points(self) -> list[metadata.EntryPoint]:
        return list(metadata.entry_points(group=self.group))

    def load_entry_points(self, force: bool = False) -> None:
        """Import every entry point of this registry's group once.

        A plugin whose import fails gives one warning naming the plugin and its error; every other
        component keeps working. Duplicate names and contract violations raise.
        """
        if self._loaded_entry_points and not force:
            return
        _ensure_builtins()
        errors: list[str] = []
        for ep in self._entry_points():
            dist = ep.dist.name if getattr(ep, "dist", None) is not None else "unknown package"
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
                msg = f"{type(exc).__name__}: {exc}"
                self.load_errors[ep.name] = f"{dist}: {msg}"
                warnings.warn(
                    f"stgen: could not load {self.kind} {ep.name!r} from package {dist!r} "
                    f"({ep.value}): {msg}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            source = BUILTIN_SOURCE if dist.lower() == BUILTIN_SOURCE else dist
            try:
                self.add(ep.name, obj, source=source)
            except RegistryError as exc:
                errors.append(str(exc))
        if errors:
            raise RegistryError("; ".join(errors))
        self._loaded_entry_points = True

    # -- lookup -------------------------------------------------------------------------------
    def _all(self) -> dict[str, Entry]:
        self.load_entry_points()
        return self._entries

    def names(self) -> list[str]:
        return sorted(self._all())

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self._entries[name]

    def entry(self, name: str) -> Entry:
        entries = self._all()
        if name not in entries:
            broken = (
                f" (failed to load: {self.load_errors[name]})" if name in self.load_errors else ""
            )
            raise RegistryError(unknown_name_message(self.kind, name, sorted(entries), broken))
        return entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __len__(self) -> int:
        return len(self._all())


def _source_of_module(module: str) -> str:
    """The distribution that provides a top-level module (its own name when none is installed)."""
    top = module.split(".")[0]
    if top == BUILTIN_SOURCE:
        return BUILTIN_SOURCE
    return metadata.packages_distributions().get(top, [top or "unknown"])[0]


@dataclass(frozen=True)
class Kind:
    """One kind of component: a row of :data:`KIND_TABLE`.

    Args:
        name: config group and command-line name (``stgen run encoder=...``, ``stgen describe encoder``).
        label: the name used in messages ("feature backend").
        group: entry-point group that plugins declare.
        builtins: module whose import registers the built-in components.
        aliases: other spellings accepted by ``stgen describe`` ("encoders").
        in_model: part of a model spec (built by ``build_model`` and recorded in checkpoints).
    """

    name: str
    label: str
    group: str
    builtins: str
    aliases: tuple[str, ...] = ()
    in_model: bool = False


#: the registry table: every other list of kinds is derived from it
KIND_TABLE: tuple[Kind, ...] = (
    Kind("encoder", "encoder", "stgen.encoders", "stgen.encoders", ("encoders",), in_model=True),
    Kind("generator", "generator", "stgen.generators", "stgen.generators", ("generators",), in_model=True),
    Kind("prior", "prior", "stgen.priors", "stgen.priors", ("priors",), in_model=True),
    Kind("features", "feature backend", "stgen.features", "stgen.features", ("feature", "backend", "backends")),
    Kind("data", "dataset", "stgen.datasets", "stgen.data", ("dataset", "datasets")),
)
KINDS: dict[str, Kind] = {k.name: k for k in KIND_TABLE}
#: the kinds of a model spec, in build order
MODEL_KINDS: tuple[str, ...] = tuple(k.name for k in KIND_TABLE if k.in_model)
_builtins_loaded = False


def _ensure_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for kind in KIND_TABLE:
        importlib.import_module(kind.builtins)


def resolve_kind(name: str) -> str:
    """The table name of a kind given by its name or an alias; an unknown kind lists the valid ones."""
    for kind in KIND_TABLE:
        if name == kind.name or name in kind.aliases:
            return kind.name
    raise RegistryError(unknown_name_message("component kind", name, [k.name for k in KIND_TABLE]))


REGISTRIES: dict[str, Registry] = {k.name: Registry(k.label, k.group) for k in KIND_TABLE}
ENCODERS: Registry = REGISTRIES["encoder"]
GENERATORS: Registry = REGISTRIES["generator"]
PRIORS: Registry = REGISTRIES["prior"]
FEATURES: Registry = REGISTRIES["features"]
DATASETS: Registry = REGISTRIES["data"]
