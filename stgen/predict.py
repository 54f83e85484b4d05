"""Whole-slide prediction for new slides: chunked, exact, with uncertainty, AnnData in and out.

Each network call of the sampler is computed in spatial chunks: the spots are ordered along a Hilbert
curve over the slide (whatever their order in the file), cut into consecutive chunks, and each chunk
plus its receptive field (the ``receptive_field`` hops of the encoder, found on the slide's kNN graph
with PyG's ``k_hop_subgraph``) is run through the encoder; only the chunk's rows are kept. The sampler's
state lives on the whole slide, so the result equals the unchunked computation. Each chunk's subgraph
and the encoder's per-chunk context (for ``fa_local``: frame inputs, and the frame-averaged edge features
when they fit) are built once per slide and reused by every sampling step and every sample. The chunk
size follows from a memory budget for the whole process (``--memory-budget``; default: what the process
holds now plus half the memory available); what the process already holds counts against it. Features
stored as float16 stay float16 (each chunk's rows are converted when gathered), and the checkpoint's input
standardisation is applied per chunk, so no whole-slide copy of the features is made.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import k_hop_subgraph

from stgen.data.graph import graph_with_k, slide_to_data
from stgen.data.slide import FEATURE_KEY, MEAN_LAYER, STD_LAYER, slide_id
from stgen.encoders.base import Encoder
from stgen.errors import ConfigInputError
from stgen.io import h5ad_safe

#: bytes per spot assumed for an encoder that does not state its own (``inference_bytes_per_spot``)
DEFAULT_BYTES_PER_SPOT = 64 * 1024
#: spots per chunk at least (below, the halo dominates the work)
MIN_CHUNK = 2048


def parse_memory(text: str | int | float) -> int:
    """Bytes from ``"6G"``, ``"512M"``, ``"1.5GiB"`` or a plain number of bytes."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
        if m is None:
            raise ConfigInputError(f"memory budget {text!r}: expected a size such as 4G, 512M or 1.5GiB")
        scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
        value = float(m.group(1)) * scale
    if value <= 0:
        raise ConfigInputError(f"memory budget {text!r} must be positive, e.g. 4G")
    return int(value)


def held_memory(device: torch.device | str = "cpu") -> int:
    """Bytes this process holds now: tensors allocated on a CUDA device, else the resident set size
    (``VmRSS``: interpreter, libraries and data; 0 where ``/proc`` is unavailable)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def default_memory_budget(device: torch.device | str = "cpu") -> int:
    """What the process holds now (:func:`held_memory`) plus half the memory available: free GPU memory
    on CUDA, ``MemAvailable`` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return held_memory(device) + int(torch.cuda.mem_get_info(device)[0] * 0.5)
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        free = info["MemAvailable"]
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return held_memory(device) + int(free * 0.5)


def hilbert_order(pos: Tensor, bits: int = 16) -> Tensor:
    """Permutation ordering spots along a Hilbert curve over their bounding box (spatially compact runs).

    Shapes:
        pos ``[N, 2]`` -> ``[N]`` (long).
    """
    p = pos.detach().double().cpu()
    lo, hi = p.min(dim=0).values, p.max(dim=0).values
    side = float((hi - lo).max().clamp_min(1e-12))
    n = 1 << bits
    q = ((p - lo) / side * (n - 1)).round().long()
    x, y = q[:, 0].clone(), q[:, 1].clone()
    d = torch.zeros_like(x)
    s = n >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.long()) ^ ry.long())
        flip = ~ry & rx
        x = torch.where(flip, n - 1 - x, x)
        y = torch.where(flip, n - 1 - y, y)
        swap = ~ry
        x, y = torch.where(swap, y, x), torch.where(swap, x, y)
        s >>= 1
    return torch.argsort(d, stable=True).to(pos.device)


@dataclass
class Chunk:
    """One spatial chunk of a slide and everything about it that no sampling step changes.

    Args:
        core: the chunk's spots (slide indices) whose outputs are kept.
        subset: core plus receptive-field halo (slide indices), the rows the encoder sees.
        mapping: positions of ``core`` within ``subset``.
        batch: the subgraph (``pos``, ``edge_index``, ``batch``; features are gathered per call).
        context: the inner encoder's ``prepare`` result for ``batch``, or None to rebuild it per call.

    Shapes:
        core ``[C]``, subset ``[S]``, mapping ``[C]``.
    """

    core: Tensor
    subset: Tensor
    mapping: Tensor
    batch: Batch
    context: Any = None


@dataclass
class ChunkPlan:
    """How a slide is cut: chunks, their size, and what is kept across calls."""

    chunks: list[Chunk] = field(default_factory=list)
    chunk_size: int = 0
    cache_context: bool = True
    cache_edge_features: bool = False


class ChunkedEncoder(Encoder):
    """Wraps an encoder so each call runs over spatial chunks with their receptive-field halo.

    Args:
        inner: the trained encoder (``receptive_field`` hops: ``None`` means the whole slide).
        chunk_size: spots per chunk; None derives it from ``memory_budget``.
        memory_budget: bytes the whole process may hold (default: :func:`default_memory_budget`).
        cache_edge_features: keep each chunk's edge features across calls (None: when the budget allows).
        transform: applied to each chunk's features after they are gathered (and converted to float32
            when stored in half precision), e.g. the checkpoint's input standardisation; None: identity.

    The budget bounds the whole process: what it holds when the plan is made (:func:`held_memory`)
    counts against it, as do the sampler's whole-slide states.

    Shapes:
        same as ``inner``: ``[N, G]``.
    """

    def __init__(self, inner: Encoder, chunk_size: int | None = None, memory_budget: int | None = None,
                 cache_edge_features: bool | None = None, transform: Any = None) -> None:
        super().__init__(inner.in_dim, inner.out_dim)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
        self.inner = inner
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.cache_edge_features = cache_edge_features
        self.transform = transform
        self.uses_state = inner.uses_state  # type: ignore[misc]
        self._plans: dict[int, tuple[Batch, Any]] = {}
        self.last_plan: ChunkPlan | None = None

    def _bytes_per_spot(self) -> tuple[int, int, int, int]:
        """(activations, kept context, kept edge features) per spot of a chunk and its halo, and a
        constant working set, in bytes (the inner encoder's ``inference_bytes_per_spot`` when it has one)."""
        fn = getattr(self.inner, "inference_bytes_per_spot", None)
        if fn is None:
            return DEFAULT_BYTES_PER_SPOT, 0, 0, 0
        return fn()

    def plan(self, batch: Batch) -> ChunkPlan:
        """Chunk size from the budget, spatial chunks, and each chunk's subgraph and context."""
        hops = getattr(self.inner, "receptive_field", None)
        n = batch.num_nodes
        act, ctx_bytes, edge_bytes, constant = self._bytes_per_spot()
        budget = self.memory_budget or default_memory_budget(batch.pos.device)
        # what the process holds (interpreter, slide, graph), the sampler's whole-slide arrays (state,
        # prediction and the prior's last block: 3 x [N, G] float32), the edge slices' working set
        fixed = held_memory(batch.pos.device) + 3 * n * self.out_dim * 4 + constant + (128 << 20)
        room = max(budget - fixed, 0)
        halo = 1.3  # a chunk's receptive field adds about this factor of spots (spatial chunks)
        cache_context = ctx_bytes * n * halo <= 0.25 * room
        cache_edges = cache_context and (ctx_bytes + edge_bytes) * n * halo <= 0.4 * room
        if self.cache_edge_features is not None:
            cache_edges = cache_context and self.cache_edge_features
        kept = (ctx_bytes + (edge_bytes if cache_edges else 0)) * n * halo if cache_context else 0
        size = self.chunk_size
        if size is None:
            size = max(MIN_CHUNK, int((room - kept) / (act * halo)))
        plan = ChunkPlan(chunk_size=size, cache_context=cache_context, cache_edge_features=cache_edges)
        if hops is None or n <= size:
            plan.chunk_size = n
            plan.cache_edge_features = self.cache_edge_features is not False
            return plan
        k = self.inner.graph_k
        edge_index = graph_with_k(batch, k) if k is not None else batch.edge_index
        order = hilbert_order(batch.pos)
        for start in range(0, n, size):
            core = order[start:start + size].sort().values
            subset, sub_edges, mapping, _ = k_hop_subgraph(core, int(hops), edge_index, relabel_nodes=True,
                                                           num_nodes=n, flow="source_to_target")
            sub = Batch(pos=batch.pos[subset], edge_index=sub_edges,
                        batch=torch.zeros(subset.numel(), dtype=torch.long, device=subset.device),
                        ptr=torch.tensor([0, subset.numel()], device=subset.device))
            sub.graph_k = k
            chunk = Chunk(core=core, subset=subset, mapping=mapping, batch=sub)
            if cache_context:
                chunk.context = self._prepare_chunk(chunk, batch, cache_edges)
            plan.chunks.append(chunk)
        return plan

    def _prepare_chunk(self, chunk: Chunk, batch: Batch, cache_edges: bool) -> Any:
        chunk.batch.x = self._features(batch.x[chunk.subset])  # for encoders whose prepare reads features
        try:
            context = self.inner.prepare(chunk.batch)
        finally:
            del chunk.batch.x
        if hasattr(context, "cache_edge_features"):
            context.cache_edge_features = cache_edges
        compact = getattr(context, "compact_", None)
        if compact is not None:  # e.g. int32 edges: one copy, shared by the chunk's batch and context
            compact()
            chunk.batch.edge_index = context.edge_index
        return context

    def _features(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.to(torch.float32)
        return x if self.transform is None else self.transform(x)

    def prepare(self, batch: Batch) -> Any:
        """The slide's chunk plan, built once per batch and reused by every sample drawn from it."""
        held = self._plans.get(id(batch))
        if held is not None and held[0] is batch:
            return held[1]
        plan = self.plan(batch)
        if plan.chunks:
            context: tuple[str, Any] = ("chunks", plan)
        else:  # one chunk: the features converted once, the inner context of the whole slide
            whole = batch
            if self.transform is not None or batch.x.dtype in (torch.float16, torch.bfloat16):
                whole = batch.__copy__()
                whole.x = self._features(batch.x)
            inner = self.inner.prepare(whole)
            if hasattr(inner, "cache_edge_features"):
                inner.cache_edge_features = plan.cache_edge_features
            context = ("whole", (whole, inner))
        self._plans = {id(batch): (batch, context)}
        self.last_plan = plan
        return context

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        mode, payload = context
        if mode == "whole":
            whole, inner = payload
            return self.inner(whole, y, t, inner)
        out = y.new_empty(y.shape)
        node_t = t[batch.batch]
        for chunk in payload.chunks:
            sub = chunk.batch
            sub.x = self._features(batch.x[chunk.subset])
            try:
                inner_context = chunk.context
                if inner_context is None:
                    inner_context = self.inner.prepare(sub)
                sub_t = node_t[chunk.subset[:1]]
                out[chunk.core] = self.inner(sub, y[chunk.subset], sub_t, inner_context)[chunk.mapping]
            finally:
                del sub.x
        return out


def slide_batch(data: Data) -> Batch:
    """A one-slide ``Batch`` sharing ``data``'s tensors (``Batch.from_data_list`` would copy them)."""
    n = data.num_nodes
    batch = Batch(x=data.x, pos=data.pos, edge_index=data.edge_index,
                  batch=torch.zeros(n, dtype=torch.long), ptr=torch.tensor([0, n]))
    for key in ("slide_id", "graph_k"):
        if key in data:
            batch[key] = data[key]
    return batch


@dataclass
class Prediction:
    """Prediction of one slide.

    Args:
        mean: ``[N, G]`` mean over samples (log1p expression).
        std: ``[N, G]`` predictive spread (over samples, and/or a likelihood head's sd, recalibrated when the
            checkpoint holds a fitted scale), or None.
        genes: gene panel.
        n_samples: samples behind ``mean``.
    """

    mean: np.ndarray
    std: np.ndarray | None
    genes: list[str]
    n_samples: int = 1


def load_module(checkpoint: str | Path, map_location: str = "cpu"):
    """Load a trained LightningModule (see :func:`stgen.checkpoint.load_module`).

    A missing file, a truncated or foreign file, a pickle the safe loader refuses or a missing plugin
    package each give one error naming the checkpoint and the fix.
    """
    from stgen.checkpoint import load_module as load

    return load(checkpoint, map_location=map_location)


def _check_input(module: Any, adata: ad.AnnData, path: Path, feature_key: str) -> None:
    """Refuse an input slide before anything is written: the Slide contract and the model's feature width."""
    from stgen.data.slide import validate_slide
    from stgen.errors import DataInputError

    validate_slide(adata, feature_key=feature_key, require_counts=False, name=f"{path}")
    width = np.asarray(adata.obsm[feature_key]).shape[1]
    if width != module.hparams.in_dim:
        raise DataInputError(
            f"slide {path}: obsm['{feature_key}'] has {width} features but the model was trained on "
            f"{module.hparams.in_dim}; extract features with the same backend as the training data"
        )


@torch.no_grad()
def predict_slide(module: Any, adata: ad.AnnData, *, feature_key: str = FEATURE_KEY,
                  n_samples: int | None = None, steps: int | None = None, seed: int = 0,
                  chunk_size: int | None = None, memory_budget: int | str | None = None,
                  timings: dict[str, float] | None = None) -> Prediction:
    """Predict the gene panel of one slide (with or without measured expression).

    The slide graph is the one the checkpoint's encoder reads (``encoder.k``); ``n_samples`` and ``steps``
    default to the checkpoint's generator settings. The spread is the checkpoint's (samples and/or a
    likelihood head), times the checkpoint's per-gene recalibration scale when it has one. The slide's features are used in place (no copy);
    chunks follow ``chunk_size`` or, by default, ``memory_budget`` (bytes or a size such as ``"4G"``;
    default: what the process holds plus half the memory available). Features stored as float16 stay
    float16. ``timings``, when given, receives the seconds spent on the
    graph, the chunk plan and the sampling.
    """
    model = module.model
    genes = list(module.genes)
    expected = module.hparams.in_dim
    feats = adata.obsm.get(feature_key)
    if feats is not None and np.asarray(feats).shape[1] != expected:
        raise ValueError(
            f"slide {slide_id(adata)!r}: obsm['{feature_key}'] has {np.asarray(feats).shape[1]} features but the "
            f"model was trained on {expected}; extract features with the same backend as the training data"
        )
    clock = time.perf_counter()
    data = slide_to_data(adata, genes=None, k=model.encoder.graph_k, feature_key=feature_key,
                         with_expression=False, keep_half=True)
    del data.y  # the sampler needs no expression: do not hold an [N, G] array of zeros
    device = next(model.parameters()).device
    batch = slide_batch(data).to(device)
    budget = None if memory_budget is None else parse_memory(memory_budget)
    # the checkpoint's input standardisation, applied to each chunk's rows (no whole-slide copy)
    scaler = model.scaler if getattr(model.scaler, "active", False) else None
    encoder = ChunkedEncoder(model.encoder, chunk_size=chunk_size, memory_budget=budget, transform=scaler)
    lap = {"graph": time.perf_counter() - clock}
    clock = time.perf_counter()
    encoder.prepare(batch)  # the chunk plan, reused by every sampling step and sample
    lap["plan"] = time.perf_counter() - clock
    clock = time.perf_counter()
    out = model.generator.predict(encoder, batch, model.prior, steps=steps, seed=seed, n_samples=n_samples)
    out = model.spread_scale(out)  # the checkpoint's recalibration of the spread (identity when none)
    lap["sampling"] = time.perf_counter() - clock
    if timings is not None:
        timings.update(lap)
        plan = encoder.last_plan
        if plan is not None:
            timings["chunks"] = max(len(plan.chunks), 1)
            timings["chunk_size"] = plan.chunk_size
            timings["halo_spots"] = sum(c.subset.numel() - c.core.numel() for c in plan.chunks)
    std = None if out.std is None else out.std.float().cpu().numpy()
    return Prediction(mean=out.mean.float().cpu().numpy(), std=std, genes=genes, n_samples=out.n_samples)


def to_anndata(adata: ad.AnnData, pred: Prediction, info: dict[str, Any]) -> ad.AnnData:
    """The input slide with ``layers['stgen_mean']``/``['stgen_std']`` over the gene panel.

    Genes of the panel missing from the input become new (zero-count) variables, so the output has
    exactly the panel's genes; the input's ``X`` for those that exist is kept.
    """
    genes = pred.genes
    X = np.zeros((adata.n_obs, len(genes)), dtype=np.float32)
    present = [g for g in genes if g in adata.var_names]
    if present:
        sub = adata[:, present].X
        sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
        idx = [genes.index(g) for g in present]
        X[:, idx] = sub
    out = ad.AnnData(X=X, obs=adata.obs.copy(), var=adata.var.reindex(genes).copy() if present else None)
    out.var_names = genes
    out.obsm = {k: v for k, v in adata.obsm.items()}
    out.layers[MEAN_LAYER] = np.asarray(pred.mean, dtype=np.float32)  # no copy when already float32
    if pred.std is not None:
        out.layers[STD_LAYER] = np.asarray(pred.std, dtype=np.float32)
    out.uns["stgen"] = {**h5ad_safe(dict(adata.uns.get("stgen", {}))), **h5ad_safe(info), "genes": genes}
    out.uns["stgen"].setdefault("target", "log1p")
    return out


IMAGE_OPTIONS = ("mpp", "spots", "spacing_um", "layout", "features", "feature_params", "patch_um", "cache_dir",
                 "use_cache", "num_workers", "batch_size", "device", "keep_features", "progress")


def target_info(module: Any) -> dict[str, str]:
    """What ``stgen_mean`` holds: the checkpoint's target and its description."""
    from stgen.preprocess import TARGET_DESCRIPTIONS

    target = getattr(module, "preprocess", None)
    name = target.target if target is not None else "log1p"
    return {"target": name, "target_description": TARGET_DESCRIPTIONS[name]}


def predict_files(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """Predict every input and write ``<out_dir>/<name>.h5ad`` atomically; never overwrites.

    Inputs are slide ``.h5ad`` files (spots and embeddings) or images (whole-slide ``.svs``/``.tif``/
    ``.ndpi``/OME-TIFF, or ``.jpg``/``.png`` with ``mpp``), predicted with :func:`stgen.wsi.predict_image`
    (which also writes ``<name>_tissue.png``). Every input, the checkpoint and the feature backend are
    checked before the output folder is created. Image options (``IMAGE_OPTIONS``) go to the image path;
    the others (``n_samples``, ``steps``, ``seed``, ``k``, ...) to :func:`predict_slide`.
    """
    from stgen import __version__
    from stgen.errors import DataInputError, MissingInputError, OutputExistsError
    from stgen.io import read_h5ad, write_h5ad
    from stgen.wsi.pipeline import (
        build_extractor,
        image_settings,
        library_id_of,
        predict_image,
        prepare_image,
    )

    image_opts = {k: kwargs.pop(k) for k in IMAGE_OPTIONS if k in kwargs}
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--out {out_dir} exists and is not a folder; choose another --out folder")
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise MissingInputError(f"input {', '.join(missing)} does not exist; give existing .h5ad slide files or "
                                "slide images")
    images = [Path(p) for p in inputs if Path(p).suffix.lower() != ".h5ad"]
    names = [library_id_of(p) if p in images else Path(p).stem for p in map(Path, inputs)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataInputError(f"several inputs would write {', '.join(n + '.h5ad' for n in dup)}; rename one or "
                             "predict them into different --out folders")
    targets = [out_dir / f"{n}.h5ad" for n in names]
    masks = {p: out_dir / f"{library_id_of(p)}_tissue.png" for p in images}
    clash = [str(t) for t in [*targets, *masks.values()] if t.exists()]
    if clash:
        raise OutputExistsError(f"output file(s) exist: {', '.join(clash)}; choose another --out folder")
    if image_opts.get("spots") is not None and len(images) != 1:
        raise DataInputError(f"--spots gives the positions of one slide, but {len(images)} images were given")
    if kwargs.get("memory_budget") is not None:
        parse_memory(kwargs["memory_budget"])  # a bad budget stops here, before anything is written
    module = load_module(checkpoint)
    feature_key = kwargs.get("feature_key", FEATURE_KEY)
    for p in inputs:  # every input is checked before the output folder is created
        if Path(p) in images:
            continue
        lazy = read_h5ad(p, backed="r")
        try:
            _check_input(module, lazy, Path(p), feature_key)
        finally:
            lazy.file.close()
    jobs: dict[Path, Any] = {}
    extractor = None
    if images:
        settings = image_settings(module, f"checkpoint {checkpoint}", features=image_opts.get("features"),
                                  feature_params=image_opts.get("feature_params"), patch_um=image_opts.get("patch_um"),
                                  spacing_um=image_opts.get("spacing_um"), layout=image_opts.get("layout"))
        for p in images:
            jobs[p] = prepare_image(p, mpp=image_opts.get("mpp"), spots=image_opts.get("spots"), settings=settings)
        extractor = build_extractor(module, settings, device=image_opts.get("device", "auto"),
                                    batch_size=image_opts.get("batch_size", 64))
    written: list[Path] = []
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for src, dst in zip(map(Path, inputs), targets, strict=True):
            if src in jobs:
                opts = {k: v for k, v in image_opts.items() if k not in ("mpp", "spots")}
                adata = predict_image(module, src, job=jobs[src], extractor=extractor, mask_path=masks[src],
                                      **opts, **kwargs)
                adata.uns["stgen"]["checkpoint"] = str(checkpoint)
                write_h5ad(adata, dst)
                written.append(dst)
                continue
            adata = read_h5ad(src)
            if "slide_id" not in adata.uns.get("stgen", {}):
                adata.uns.setdefault("stgen", {})["slide_id"] = Path(src).stem
            pred = predict_slide(module, adata, **kwargs)
            info = {"checkpoint": str(checkpoint), "model_version": __version__,
                    "model_spec": module.hparams.model_spec, "n_samples": pred.n_samples,
                    "seed": kwargs.get("seed", 0)}
            write_h5ad(to_anndata(adata, pred, info), dst)
            written.append(dst)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    return written


def prediction_info(module: Any, checkpoint: str | Path, n_samples: int, seed: int) -> dict[str, Any]:
    """What ``uns['stgen']`` of a prediction records about the model and the sampling."""
    from stgen import __version__

    return {"checkpoint": str(checkpoint), "model_version": __version__, "model_spec": module.hparams.model_spec,
            "n_samples": n_samples, "seed": seed, **target_info(module)}


def predict_file(module: Any, checkpoint: str | Path, src: str | Path, dst: str | Path,
                 **kwargs: Any) -> int | None:
    """Predict the slide file ``src`` and write ``dst`` once, atomically; skip it if ``dst`` exists.

    The output is written to a temporary file beside ``dst`` and hard-linked to ``dst``, which fails if
    ``dst`` appeared meanwhile (so a finished output is never replaced, even by a concurrent process).

    Returns:
        the number of spots predicted, or None when ``dst`` existed (nothing done).
    """
    from stgen.io import write_h5ad

    src, dst = Path(src), Path(dst)
    if dst.exists():
        return None
    adata = ad.read_h5ad(src)
    if "slide_id" not in adata.uns.get("stgen", {}):
        adata.uns.setdefault("stgen", {})["slide_id"] = src.stem
    pred = predict_slide(module, adata, **kwargs)
    info = prediction_info(module, checkpoint, pred.n_samples, kwargs.get("seed", 0))
    out = to_anndata(adata, pred, info)
    del adata, pred
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        write_h5ad(out, tmp)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            return None
        except OSError:  # no hard links on this file system: rename (atomic, may replace a racing twin)
            os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return out.n_obs
