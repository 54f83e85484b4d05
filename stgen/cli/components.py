"""``stgen list`` and ``stgen describe``: the registered components, their packages and parameters."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stgen.cli.common import UserError, format_table, plain


def add_parser(sub: Any) -> None:
    """``stgen list`` and ``stgen describe``: registered components (no Lightning import)."""
    p = sub.add_parser("list", help="list every registered component with the package it comes from")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("describe", help="parameters, defaults and meaning of one component, e.g. `describe encoder gnn`")
    p.add_argument("kind", help="encoder | generator | prior | features | data")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)


def _summary(obj: Any) -> str:
    import inspect

    doc = (inspect.getdoc(obj) or "").split("\n\n")[0]
    return plain(" ".join(doc.split()))


def cmd_list(args: argparse.Namespace) -> int:
    from stgen.registry import REGISTRIES

    rows = []
    for kind, reg in REGISTRIES.items():
        for e in reg.entries():
            rows.append({"kind": kind, "name": e.name, "package": e.source, "summary": _summary(e.obj)})
    print(format_table(rows, ["kind", "name", "package", "summary"]))
    for kind, reg in REGISTRIES.items():
        for name, err in reg.load_errors.items():
            print(f"(could not load {kind} {name!r}: {err})", file=sys.stderr)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    import inspect

    from stgen.registry import REGISTRIES, RegistryError, resolve_kind

    try:
        kind = resolve_kind(args.kind)
        entry = REGISTRIES[kind].entry(args.name)
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    cls = entry.obj
    print(f"{kind} {entry.name}  (package {entry.source}; {entry.origin})")
    doc = inspect.getdoc(cls) or ""
    if doc:
        print("\n" + plain(doc.split("\n\n")[0]))
    data_args = getattr(cls, "data_args", ())
    if data_args:
        print(f"\nset from the data: {', '.join(data_args)}")
    rows = []
    for p in cls.params():
        ann = p.annotation
        typ = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append({"parameter": f"{kind}.{p.name}", "type": typ, "default": repr(p.default),
                     "description": plain(p.doc)})
    print()
    print(format_table(rows, ["parameter", "type", "default", "description"]) if rows else "(no parameters)")
    return 0
