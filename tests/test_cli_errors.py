"""Bad inputs at every entry point, as a user gives them: one line naming the file and the fix, exit 2.

Each case builds its broken input in its own folder, runs the command line (``stgen.cli.main``), and
checks: exit status 2, exactly one line on stderr (``stgen <cmd>: error: ...``) that names the file,
slide or option and says what to do, no traceback, and no file created, changed or removed anywhere in
the test's folders (no partial output, no empty output folder, nothing written outside the intended
folder). A few cases also run as a separate process, as a shell user would.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from stgen.cli import main

GENES = [f"G{i}" for i in range(8)]
HEST_SAMPLES = {"S1": "P1", "S2": "P1", "S3": "P2", "S4": "P2"}
RUN_TINY = ["data.n_slides=4", "data.n_patients=4", "data.n_spots=80", "data.n_genes=6", "data.feature_dim=8",
            "train.crops_per_slide=2", "trainer.enable_progress_bar=false", "eval.ridge=false"]


# -- a world of valid inputs, built once ------------------------------------------------------------
def _grid(n_rows: int, n_cols: int, step: float = 100.0, seed: int = 0) -> np.ndarray:
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    xy = np.stack([(c + 0.5 * (r % 2)).ravel() * step, r.ravel() * step * 0.866], axis=1)
    return xy + np.random.default_rng(seed).normal(0, 1.0, xy.shape)


def write_hest_sample(root: Path, sid: str, seed: int, coords: np.ndarray | None = None,
                      img: np.ndarray | None = None) -> None:
    rng = np.random.default_rng(seed)
    xy = _grid(5, 6, seed=seed) if coords is None else coords
    n = len(xy)
    barcodes = [f"{sid}_{i:02d}" for i in range(n)]
    counts = rng.poisson(3.0, size=(n, len(GENES))).astype(np.float32)
    (root / "st").mkdir(parents=True, exist_ok=True)
    (root / "patches").mkdir(parents=True, exist_ok=True)
    ad.AnnData(X=counts, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=GENES)).write_h5ad(
        root / "st" / f"{sid}.h5ad")
    img = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8) if img is None else img
    with h5py.File(root / "patches" / f"{sid}.h5", "w") as f:
        f.create_dataset("img", data=img)
        f.create_dataset("coords", data=xy)
        f.create_dataset("barcode", data=np.array([[b.encode()] for b in barcodes], dtype="S"))


def write_splits(root: Path, ids: dict[str, str]) -> None:
    (root / "splits").mkdir(parents=True, exist_ok=True)
    patients = sorted(set(ids.values()))
    for k, held in enumerate(patients):
        for part, keep in (("train", lambda p, h=held: p != h), ("test", lambda p, h=held: p == h)):
            rows = [{"sample_id": s, "patches_path": f"patches/{s}.h5", "expr_path": f"st/{s}.h5ad", "patient": p}
                    for s, p in ids.items() if keep(p)]
            pd.DataFrame(rows).to_csv(root / "splits" / f"{part}_{k}.csv", index=False)


def make_hest(root: Path) -> Path:
    for i, sid in enumerate(HEST_SAMPLES):
        write_hest_sample(root, sid, seed=i)
    write_splits(root, HEST_SAMPLES)
    (root / "var_50genes.json").write_text(json.dumps({"genes": GENES[:5]}))
    return root


def make_legacy(root: Path, sections: tuple[str, ...] = ("A1", "B1")) -> Path:
    rng = np.random.default_rng(0)
    for d in ("counts", "spots", "images"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for sec in sections:
        ids = [(x, y) for x in range(2, 8) for y in range(2, 7)]
        counts = pd.DataFrame(rng.poisson(4.0, size=(len(ids), 30)), columns=[f"GENE{i}" for i in range(30)],
                              index=[f"{x}x{y}" for x, y in ids])
        with gzip.open(root / "counts" / f"{sec}.tsv.gz", "wt") as fh:
            counts.to_csv(fh, sep="\t")
        pd.DataFrame({"x": [x for x, _ in ids], "y": [y for _, y in ids], "new_x": [float(x) for x, _ in ids],
                      "new_y": [float(y) for _, y in ids], "pixel_x": [40.0 * x for x, _ in ids],
                      "pixel_y": [40.0 * y for _, y in ids], "selected": 1}).to_csv(
            root / "spots" / f"{sec}_selection.tsv", sep="\t", index=False)
        Image.new("RGB", (360, 320), (200, 120, 160)).save(root / "images" / f"{sec}.jpg")
    return root


@dataclass
class World:
    root: Path
    ckpt: Path
    run: Path
    slide: Path
    hest: Path
    legacy: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    run = root / "run"
    assert main(["run", "encoder=gnn", "generator=regression", "prior=zero", *RUN_TINY, "trainer.max_epochs=1",
                 f"output_dir={run}"]) == 0
    pred = ad.read_h5ad(next((run / "predictions").glob("*.h5ad")))
    del pred.layers["stgen_mean"]
    pred.X = np.zeros_like(pred.X)
    pred.write_h5ad(root / "slide.h5ad")
    return World(root, run / "checkpoints" / "best.ckpt", run, root / "slide.h5ad", make_hest(root / "hest"),
                 make_legacy(root / "legacy"))


# -- helpers that break things --------------------------------------------------------------------
def slide_with(world: World, tmp: Path, name: str, change: Callable[[ad.AnnData], ad.AnnData | None]) -> str:
    a = ad.read_h5ad(world.slide)
    a = change(a) or a
    path = tmp / name
    a.write_h5ad(path)
    return str(path)


def text_file(tmp: Path, name: str, text: str = "not an hdf5 file\n") -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def truncated_copy(src: Path, tmp: Path, name: str, keep: float = 0.5) -> str:
    data = src.read_bytes()
    (tmp / name).write_bytes(data[: int(len(data) * keep)])
    return str(tmp / name)


def hest_copy(world: World, tmp: Path) -> Path:
    return Path(shutil.copytree(world.hest, tmp / "hest"))


def set_sample_id(root: Path, old: str, new: str) -> None:
    for csv in (root / "splits").glob("*.csv"):
        df = pd.read_csv(csv)
        df["sample_id"] = df["sample_id"].replace(old, new)
        df.to_csv(csv, index=False)


def hest_with(world: World, tmp: Path, change: Callable[[Path], None]) -> str:
    root = hest_copy(world, tmp)
    change(root)
    return str(root)


def refused_pickle(world: World, tmp: Path) -> str:
    ckpt = torch.load(world.ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["extra"] = Path("/x")  # a Python object the safe loader refuses
    torch.save(ckpt, tmp / "pickled.ckpt")
    return str(tmp / "pickled.ckpt")


def legacy_with(world: World, tmp: Path, change: Callable[[Path], None]) -> str:
    root = Path(shutil.copytree(world.legacy, tmp / "legacy"))
    change(root)
    return str(root)


def killed_run(world: World, tmp: Path) -> str:
    out = tmp / "run"
    partial = tmp / "run.incomplete"
    partial.mkdir()
    (partial / "config.yaml").write_text("x: 1\n")
    return str(out)


def live_run(world: World, tmp: Path) -> str:
    partial = tmp / "live.incomplete"
    partial.mkdir()
    shutil.copy(world.run / "config.yaml", partial / "config.yaml")
    import socket

    (partial / "run.json").write_text(json.dumps({"label": "x", "pid": os.getppid(), "host": socket.gethostname()}))
    return str(partial)


def hest_run(root: str, *extra: str) -> list[str]:
    return ["run", "data=hest", f"data.root={root}", "features=handcrafted", "encoder=gnn", "generator=regression",
            "prior=zero", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", *extra]


def with_coords(world: World, tmp: Path, name: str, make: Callable[[int], np.ndarray]) -> str:
    def change(a: ad.AnnData) -> None:
        a.obsm["spatial"] = make(a.n_obs)

    return slide_with(world, tmp, name, change)


# -- the cases: (id, argv builder, fragments the message must contain) ------------------------------
Case = tuple[str, Callable[[World, Path], list[str]], tuple[str, ...]]

CASES: list[Case] = [
    # run: options are checked before data is read or a folder is created
    ("run max_epochs negative", lambda w, t: ["run", "trainer.max_epochs=-3"], ("trainer.max_epochs=-3", ">= 1")),
    ("run max_epochs zero", lambda w, t: ["run", "trainer.max_epochs=0"], ("trainer.max_epochs=0",)),
    ("run patience negative", lambda w, t: ["run", "trainer.patience=-1"], ("trainer.patience",)),
    ("run lr zero", lambda w, t: ["run", "optim.lr=0"], ("optim.lr=0", "> 0")),
    ("run batch size zero", lambda w, t: ["run", "train.batch_size=0"], ("train.batch_size",)),
    ("run crop_min above one", lambda w, t: ["run", "train.crop_min=1.5"], ("train.crop_min", "[0, 1)")),
    ("run eval samples moved", lambda w, t: ["run", "eval.n_samples=0"], ("eval.n_samples", "generator.n_samples")),
    ("run select_on unknown", lambda w, t: ["run", "eval.select_on=best"], ("eval.select_on", "val")),
    ("run accelerator unknown", lambda w, t: ["run", "trainer.accelerator=abacus"], ("accelerator=abacus",)),
    ("run precision unknown", lambda w, t: ["run", "trainer.precision=7"], ("precision=7", "trainer")),
    ("run data k moved", lambda w, t: ["run", "data.k=0"], ("data.k", "encoder.k")),
    ("run encoder k zero", lambda w, t: ["run", "encoder=fa_local", "encoder.k=0", *RUN_TINY], ("fa_local", ">= 1")),
    ("run encoder heads do not divide", lambda w, t: ["run", "encoder=fa_local", "encoder.heads=3", *RUN_TINY],
     ("fa_local", "divisible")),
    ("run output_dir not empty", lambda w, t: ["run", *RUN_TINY, f"output_dir={w.run}"], ("not empty",)),
    ("run output_dir of a killed run", lambda w, t: ["run", *RUN_TINY, f"output_dir={killed_run(w, t)}"],
     ("unfinished run", "resume=")),
    ("run ckpt_path missing", lambda w, t: ["run", *RUN_TINY, f"ckpt_path={t / 'nope.ckpt'}"], ("nope.ckpt",)),
    ("run ckpt_path truncated", lambda w, t: ["run", *RUN_TINY, f"ckpt_path={truncated_copy(w.ckpt, t, 'cut.ckpt')}"],
     ("cut.ckpt", "truncated")),
    ("run resume missing", lambda w, t: ["run", f"resume={t / 'gone.incomplete'}"], ("gone.incomplete",)),
    ("run resume finished run", lambda w, t: ["run", f"resume={w.run}"], ("finished", "nothing to resume")),
    ("run resume with overrides", lambda w, t: ["run", f"resume={killed_run(w, t)}", "optim.lr=1"],
     ("resume=", "optim.lr=1")),
    ("run resume while its run is alive", lambda w, t: ["run", f"resume={live_run(w, t)}"],
     ("live.incomplete", "still being written")),
    ("run resume damaged config", lambda w, t: ["run", f"resume={killed_run(w, t)}.incomplete"],
     ("config.yaml", "start the run anew")),
    # data=hest
    ("hest without root", lambda w, t: ["run", "data=hest"], ("data.root",)),
    ("hest root without splits", lambda w, t: hest_run(str(t)), ("splits/",)),
    ("hest gene panel missing",
     lambda w, t: hest_run(hest_with(w, t, lambda r: (r / "var_50genes.json").unlink())), ("var_50genes.json",)),
    ("hest gene panel not json",
     lambda w, t: hest_run(hest_with(w, t, lambda r: (r / "var_50genes.json").write_text("{genes"))),
     ("var_50genes.json", "JSON")),
    ("hest sample_id climbs out",
     lambda w, t: hest_run(hest_with(w, t, lambda r: set_sample_id(r, "S1", "../../../escape"))),
     ("sample_id", "../../../escape", "rename")),
    ("hest sample_id absolute",
     lambda w, t: hest_run(hest_with(w, t, lambda r: set_sample_id(r, "S2", str(t / "abs")))),
     ("sample_id", "cannot be used as a file name")),
    ("hest split csv without sample_id",
     lambda w, t: hest_run(hest_with(w, t, lambda r: (r / "splits" / "train_0.csv").write_text("a,b\n1,2\n"))),
     ("train_0.csv", "sample_id")),
    ("hest float32 patches",
     lambda w, t: hest_run(hest_with(w, t, lambda r: write_hest_sample(
         r, "S1", 0, img=np.random.default_rng(0).random((30, 32, 32, 3)).astype(np.float32)))),
     ("S1.h5", "uint8")),
    ("hest 4x4 patches",
     lambda w, t: hest_run(hest_with(w, t, lambda r: write_hest_sample(
         r, "S1", 0, img=np.zeros((30, 4, 4, 3), np.uint8)))), ("S1.h5", "too small")),
    ("hest expression not hdf5",
     lambda w, t: hest_run(hest_with(w, t, lambda r: (r / "st" / "S3.h5ad").write_text("garbage"))),
     ("S3.h5ad", "cannot be read")),
    ("hest patches truncated",
     lambda w, t: hest_run(hest_with(w, t, lambda r: (r / "patches" / "S2.h5").write_bytes(
         (r / "patches" / "S2.h5").read_bytes()[:3000]))), ("S2.h5",)),
    ("hest all spots on one coordinate",
     lambda w, t: hest_run(hest_with(w, t, lambda r: write_hest_sample(r, "S4", 3, coords=np.ones((30, 2)))),),
     ("S4", "share one position")),
    ("hest unknown fold", lambda w, t: hest_run(str(w.hest), "data.fold=7"), ("no fold 7",)),
    # predict
    ("predict checkpoint missing", lambda w, t: ["predict", str(t / "none.ckpt"), str(w.slide), "-o", str(t / "o")],
     ("none.ckpt", "does not exist")),
    ("predict checkpoint truncated",
     lambda w, t: ["predict", truncated_copy(w.ckpt, t, "half.ckpt"), str(w.slide), "-o", str(t / "o")],
     ("half.ckpt", "truncated")),
    ("predict plain torch file", lambda w, t: ["predict", _plain_torch(t), str(w.slide), "-o", str(t / "o")],
     ("plain.pt", "not a stgen checkpoint")),
    ("predict refused pickle", lambda w, t: ["predict", refused_pickle(w, t), str(w.slide), "-o", str(t / "o")],
     ("pickled.ckpt", "safe loader")),
    ("predict checkpoint is text", lambda w, t: ["predict", text_file(t, "t.ckpt"), str(w.slide), "-o", str(t / "o")],
     ("t.ckpt",)),
    ("predict input missing", lambda w, t: ["predict", str(w.ckpt), str(t / "nope.h5ad"), "-o", str(t / "o")],
     ("nope.h5ad", "does not exist")),
    ("predict memory budget not a size",
     lambda w, t: ["predict", str(w.ckpt), str(w.slide), "--memory-budget", "lots", "-o", str(t / "o")],
     ("lots", "4G")),
    ("predict input not hdf5", lambda w, t: ["predict", str(w.ckpt), text_file(t, "x.h5ad"), "-o", str(t / "o")],
     ("x.h5ad", "cannot be read")),
    ("predict input truncated",
     lambda w, t: ["predict", str(w.ckpt), truncated_copy(w.slide, t, "cut.h5ad", 0.3), "-o", str(t / "o")],
     ("cut.h5ad",)),
    ("predict duplicate gene names", lambda w, t: ["predict", str(w.ckpt), slide_with(
        w, t, "dup.h5ad", lambda a: setattr(a, "var_names", ["G"] * a.n_vars)), "-o", str(t / "o")],
     ("dup.h5ad", "var_names")),
    ("predict all spots on one coordinate",
     lambda w, t: ["predict", str(w.ckpt), with_coords(w, t, "one.h5ad", lambda n: np.zeros((n, 2))), "-o",
                   str(t / "o")], ("one.h5ad", "share one position")),
    ("predict collinear spots",
     lambda w, t: ["predict", str(w.ckpt), with_coords(
         w, t, "line.h5ad", lambda n: np.stack([np.arange(n) * 10.0, np.arange(n) * 5.0], 1)), "-o", str(t / "o")],
     ("line.h5ad", "one line")),
    ("predict duplicated positions",
     lambda w, t: ["predict", str(w.ckpt), with_coords(
         w, t, "twice.h5ad", lambda n: np.repeat(_grid(8, 8)[: (n + 1) // 2], 2, axis=0)[:n]), "-o", str(t / "o")],
     ("twice.h5ad", "share their position")),
    ("predict huge coordinates",
     lambda w, t: ["predict", str(w.ckpt), with_coords(
         w, t, "far.h5ad", lambda n: np.vstack([_grid(8, 10)[: n - 1], [[1e12, 1e12]]])), "-o", str(t / "o")],
     ("far.h5ad", "outlier")),
    ("predict string coordinates",
     lambda w, t: ["predict", str(w.ckpt), _string_coords(w, t), "-o", str(t / "o")], ("str.h5ad", "convert")),
    ("predict NaN coordinates",
     lambda w, t: ["predict", str(w.ckpt), with_coords(
         w, t, "nan.h5ad", lambda n: np.where(np.arange(n)[:, None] == 3, np.nan, _grid(8, 10)[:n])), "-o",
                   str(t / "o")], ("nan.h5ad", "NaN")),
    ("predict features missing", lambda w, t: ["predict", str(w.ckpt), slide_with(
        w, t, "nofeat.h5ad", lambda a: a.obsm.__delitem__("features")), "-o", str(t / "o")],
     ("nofeat.h5ad", "stgen extract")),
    ("predict features of another width", lambda w, t: ["predict", str(w.ckpt), slide_with(
        w, t, "narrow.h5ad", lambda a: a.obsm.__setitem__("features", a.obsm["features"][:, :3])), "-o",
        str(t / "o")], ("narrow.h5ad", "trained on 8")),
    ("predict out is a file", lambda w, t: ["predict", str(w.ckpt), str(w.slide), "-o", text_file(t, "out.txt")],
     ("out.txt", "not a folder")),
    ("predict n-samples zero", lambda w, t: ["predict", str(w.ckpt), str(w.slide), "-o", str(t / "o"),
                                             "--n-samples", "0"], ("--n-samples",)),
    ("predict two inputs with one name", lambda w, t: ["predict", str(w.ckpt), str(w.slide), _same_name(w, t),
                                                       "-o", str(t / "o")], ("slide.h5ad", "rename")),
    # extract
    ("extract root missing", lambda w, t: ["extract", str(t / "nope"), "features=handcrafted"], ("nope",)),
    ("extract unknown backend", lambda w, t: ["extract", str(w.hest), "features=handcraftd"], ("handcraftd",)),
    ("extract sample_id climbs out",
     lambda w, t: ["extract", hest_with(w, t, lambda r: set_sample_id(r, "S3", "../x")), "features=handcrafted"],
     ("sample_id", "'../x'")),
    ("extract float32 patches",
     lambda w, t: ["extract", hest_with(w, t, lambda r: write_hest_sample(
         r, "S2", 1, img=np.zeros((30, 32, 32, 3), np.float32))), "features=handcrafted"], ("S2.h5", "uint8")),
    # convert
    ("convert root missing", lambda w, t: ["convert", "legacy-st", str(t / "nope"), "-o", str(t / "o")], ("nope",)),
    ("convert section climbs out",
     lambda w, t: ["convert", "legacy-st", str(w.legacy), "-o", str(t / "o"), "--sections", "../A1"],
     ("section", "'../A1'")),
    ("convert section unknown", lambda w, t: ["convert", "legacy-st", str(w.legacy), "-o", str(t / "o"),
                                              "--sections", "Z9"], ("Z9", "counts")),
    ("convert truncated counts",
     lambda w, t: ["convert", "legacy-st", legacy_with(w, t, lambda r: (r / "counts" / "A1.tsv.gz").write_bytes(
         (r / "counts" / "A1.tsv.gz").read_bytes()[:200])), "-o", str(t / "o")], ("A1.tsv.gz", "truncated")),
    ("convert spot table without columns",
     lambda w, t: ["convert", "legacy-st", legacy_with(w, t, lambda r: (r / "spots" / "B1_selection.tsv").write_text(
         "a\tb\n1\t2\n")), "-o", str(t / "o")], ("B1_selection.tsv", "pixel_x")),
    ("convert image truncated",
     lambda w, t: ["convert", "legacy-st", legacy_with(w, t, lambda r: (r / "images" / "A1.jpg").write_bytes(
         (r / "images" / "A1.jpg").read_bytes()[:100])), "-o", str(t / "o")], ("A1.jpg", "image")),
    ("convert output not empty",
     lambda w, t: ["convert", "legacy-st", str(w.legacy), "-o", str(w.root)], ("not empty",)),
    ("convert n-genes zero",
     lambda w, t: ["convert", "legacy-st", str(w.legacy), "-o", str(t / "o"), "--n-genes", "0"], ("--n-genes",)),
    # plot
    ("plot prediction missing", lambda w, t: ["plot", str(t / "p.h5ad"), "--genes", "G0", "-o", str(t / "f.png")],
     ("p.h5ad", "does not exist")),
    ("plot prediction not hdf5", lambda w, t: ["plot", text_file(t, "p.h5ad"), "--genes", "G0", "-o",
                                               str(t / "f.png")], ("p.h5ad", "cannot be read")),
    ("plot figure suffix", lambda w, t: ["plot", str(w.slide), "--genes", "G0", "-o", str(t / "f.txt")],
     ("f.txt", ".png")),
    ("plot figure folder missing", lambda w, t: ["plot", str(w.slide), "--genes", "G0", "-o",
                                                 str(t / "no" / "f.png")], ("does not exist",)),
    ("plot without predictions", lambda w, t: ["plot", str(w.slide), "--genes", _first_gene(w), "-o",
                                               str(t / "f.png")], ("stgen_mean", "stgen predict")),
]


def _plain_torch(tmp: Path) -> str:
    torch.save({"weights": torch.zeros(3)}, tmp / "plain.pt")
    return str(tmp / "plain.pt")


def _string_coords(world: World, tmp: Path) -> str:
    a = ad.read_h5ad(world.slide)
    path = tmp / "str.h5ad"
    a.write_h5ad(path)
    with h5py.File(path, "r+") as f:  # what a careless CSV import leaves: coordinates as strings
        del f["obsm/spatial"]
        f["obsm"].create_dataset("spatial", data=np.array([["1.5", "2"]] * a.n_obs, dtype="S"))
    return str(path)


def _same_name(world: World, tmp: Path) -> str:
    (tmp / "b").mkdir()
    shutil.copy(world.slide, tmp / "b" / "slide.h5ad")
    return str(tmp / "b" / "slide.h5ad")


def _first_gene(world: World) -> str:
    return str(ad.read_h5ad(world.slide).var_names[0])


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return out


def run_case(world: World, tmp: Path, build: Callable[[World, Path], list[str]], capsys,
             monkeypatch) -> tuple[int, str, str]:
    work = tmp / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written to the current folder (outputs/) would show up
    argv = build(world, tmp)
    capsys.readouterr()
    before = snapshot(tmp, world.root)
    rc = main(argv)
    out, err = capsys.readouterr()
    after = snapshot(tmp, world.root)
    created = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    removed = sorted(set(before) - set(after))
    assert not created and not changed and not removed, (created, changed, removed)
    return rc, out, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_leaves_nothing(case, world, tmp_path, capsys, monkeypatch):
    name, build, fragments = case
    rc, out, err = run_case(world, tmp_path, build, capsys, monkeypatch)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (name, err)
    assert "Traceback" not in err + out
    assert len(lines) == 1, lines
    assert lines[0].startswith("stgen ") and ": error: " in lines[0]
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def test_at_least_forty_distinct_bad_inputs_across_every_entry_point():
    assert len({c[0] for c in CASES}) == len(CASES) >= 40
    commands = {c[0].split()[0] for c in CASES}
    assert {"run", "hest", "predict", "extract", "convert", "plot"} <= commands


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only errors about the input are user errors: an internal error is not hidden behind exit status 2."""
    import stgen.run

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stgen.run, "train_fold", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["run", *RUN_TINY, "trainer.max_epochs=1", f"output_dir={tmp_path / 'never'}"])


@pytest.mark.parametrize("args", [
    ["run", "trainer.max_epochs=-3"],
    ["predict", "{ckpt_cut}", "{slide}", "-o", "{tmp}/o"],
    ["convert", "legacy-st", "{legacy}", "-o", "{tmp}/o", "--sections", "../A1"],
])
def test_as_a_separate_process(args, world, tmp_path):
    cut = truncated_copy(world.ckpt, tmp_path, "cut.ckpt")
    argv = [a.format(ckpt_cut=cut, slide=world.slide, tmp=tmp_path, legacy=world.legacy) for a in args]
    before = snapshot(tmp_path)
    res = subprocess.run([sys.executable, "-m", "stgen", *argv], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"stgen {argv[0]}: error: "), res.stderr
    assert snapshot(tmp_path) == before
