"""``stgen convert``: a dataset written as a HEST-Bench-style folder, with its fold plan."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stgen.cli.common import UserError


def _read_legacy_st(args: argparse.Namespace) -> Any:
    from stgen.data.convert import read_her2st

    return read_her2st(args.root, sections=args.sections, patch_um=args.patch_um, progress=True)


READERS: dict[str, Callable[[argparse.Namespace], Any]] = {"legacy-st": _read_legacy_st}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="write a dataset as a HEST-Bench-style folder (st/, patches/, splits/, genes)")
    p.add_argument("format", choices=sorted(READERS), help="input layout")
    p.add_argument("root", help="input folder")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--sections", nargs="*", default=None, help="sections to read (default: all)")
    p.add_argument("--split-by", choices=["patient", "section"], default="patient",
                   help="leave-one-patient-out or leave-one-section-out folds")
    p.add_argument("--n-genes", type=int, default=50, help="size of the highly-variable gene panel")
    p.add_argument("--include-genes", nargs="*", default=[], help="genes always kept in the panel, e.g. ERBB2")
    p.add_argument("--patch-um", type=float, default=112.0, help="patch side in micrometres (resampled to 224 px)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from stgen.data.convert import _check_output, convert_to_hest

    if args.n_genes < 1:
        raise UserError(f"--n-genes must be >= 1, got {args.n_genes}")
    if not args.patch_um > 0:
        raise UserError(f"--patch-um must be > 0 micrometres, got {args.patch_um}")
    _check_output(Path(args.out))  # before reading anything (reading sections takes minutes)
    try:
        pairs = READERS[args.format](args)
        out = convert_to_hest(pairs, args.out, split_by=args.split_by, n_genes=args.n_genes,
                              include_genes=args.include_genes)
    except PermissionError as exc:  # UserInputErrors (bad files, options) pass through
        raise UserError(f"{exc}; choose a folder you can write to") from exc
    n_spots = sum(a.n_obs for a, _ in pairs)
    print(f"wrote {out}: {len(pairs)} slides, {n_spots} spots, split by {args.split_by}")
    command = f"stgen run data=hest data.root={out} features=efficientnet_lite0"
    lacking = []
    for fold in fold_plan(pairs, args.split_by):
        print(f"  {fold['name']}: test {fold['test_groups']} ({', '.join(fold['test'])}); "
              f"validation {', '.join(fold['val']) or 'none'}; train {', '.join(fold['train'])}")
        if not fold["val"]:
            lacking.append(fold["name"])
    if lacking:
        print(f"NOTE: {', '.join(lacking)} leave(s) no slide for validation (one training slide), so model "
              "selection must use the test fold (eval.select_on=test, labelled optimistic in every output); "
              "convert with --split-by section or add slides to avoid it")
        command += " eval.select_on=test"
    print(f"train on it with: {command}")
    return 0


def fold_plan(pairs: Any, split_by: str) -> list[dict[str, Any]]:
    """The folds ``stgen run data=hest`` makes of converted slides: names, test groups, validation slides."""
    from stgen.data.convert import _folds
    from stgen.data.hest_data import carve_validation
    from stgen.data.slide import patient_id, slide_id

    ids = [slide_id(a) for a, _ in pairs]
    groups = ids if split_by == "section" else [patient_id(a) or slide_id(a) for a, _ in pairs]
    patients = {slide_id(a): patient_id(a) or slide_id(a) for a, _ in pairs}
    plan = []
    for i, (train, test) in enumerate(_folds(ids, groups)):
        fit, val = carve_validation(train, {sid: patients[sid] for sid in train}, 1)
        test_groups = sorted({g for sid, g in zip(ids, groups, strict=True) if sid in test})
        label = ("patient " if split_by == "patient" else "section ") + ", ".join(test_groups)
        plan.append({"name": f"fold{i}", "test_groups": label, "test": test, "val": val, "train": fit})
    return plan
