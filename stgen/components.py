"""Helpers shared by the component base classes: constructor-signature introspection."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Param:
    """One user-settable constructor parameter of a component."""

    name: str
    default: Any
    annotation: Any
    doc: str = ""


class Configurable:
    """Mixin: components whose user parameters come from their constructor signature.

    ``data_args`` are sizes injected by :func:`stgen.model.build_model` from the data (never typed by
    users); every other constructor parameter must have a default and a simple type, and becomes a
    config key.
    """

    data_args: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def params(cls) -> list[Param]:
        sig = inspect.signature(cls.__init__)
        hints = _hints(cls.__init__)
        out = []
        for name, p in list(sig.parameters.items())[1:]:
            if name in cls.data_args or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out.append(Param(name, p.default, hints.get(name, Any)))
        return out

    @classmethod
    def check_signature(cls) -> str | None:
        """Why the constructor does not fit the contract, or None."""
        try:
            sig = inspect.signature(cls.__init__)
        except (TypeError, ValueError) as exc:
            return f"constructor signature unreadable: {exc}"
        names = list(sig.parameters)[1:]
        missing = [a for a in cls.data_args if a not in names]
        if missing:
            return (
                f"constructor must accept the data-derived argument(s) {', '.join(missing)} "
                f"(signature: {sig})"
            )
        for p in cls.params():
            if p.default is inspect.Parameter.empty:
                return f"constructor parameter {p.name!r} needs a default so it can be configured"
        return None


def _hints(fn: Any) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations fall back to Any
        return {}
