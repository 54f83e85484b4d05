"""Helpers shared by the component base classes: constructor-signature and docstring introspection."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Param:
    """One user-settable constructor parameter of a component.

    Args:
        name: the constructor argument (the config key).
        default: its default value.
        annotation: its type hint.
        doc: its description from the class docstring's ``Args:`` section ("" when undocumented).
    """

    name: str
    default: Any
    annotation: Any
    doc: str = ""


class Configurable:
    """Mixin: components whose user parameters come from their constructor signature.

    ``data_args`` are sizes injected by :func:`stgen.build.build_model` from the data (never typed by
    users); every other constructor parameter must have a default and a simple type, and becomes a
    config key.
    """

    data_args: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def params(cls) -> list[Param]:
        sig = inspect.signature(cls.__init__)
        hints = _hints(cls.__init__)
        docs = args_doc(cls)
        out = []
        for name, p in list(sig.parameters.items())[1:]:
            if name in cls.data_args or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out.append(Param(name, p.default, hints.get(name, Any), docs.get(name, "")))
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


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Shapes|Returns|Raises|Example|Examples|Note|Notes):\s*$")
_ITEM = re.compile(r"^([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def args_doc(obj: Any) -> dict[str, str]:
    """Descriptions of the ``Args:`` section of ``obj``'s docstring (Google style), by parameter name.

    ``a, b: text`` documents both; continuation lines (indented deeper) are joined to their item.
    """
    lines = (inspect.getdoc(obj) or "").splitlines()
    out: dict[str, str] = {}
    in_args = False
    item_indent: int | None = None
    current: list[str] = []
    for line in lines:
        stripped = line.strip()
        if _SECTION.match(stripped) and not line.startswith(" "):
            in_args = stripped.startswith(("Args", "Arguments", "Parameters"))
            item_indent = None
            current = []
            continue
        if not in_args or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        m = _ITEM.match(stripped)
        if m and (item_indent is None or indent <= item_indent):
            item_indent = indent
            current = [n.strip() for n in m.group(1).split(",")]
            for name in current:
                out[name] = m.group(2).strip()
        elif current and item_indent is not None and indent > item_indent:
            for name in current:
                out[name] = f"{out[name]} {stripped}".strip()
        elif indent == 0:
            in_args = False
    return out
