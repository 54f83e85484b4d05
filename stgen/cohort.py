"""Cohort prediction spread over processes, GPUs and nodes with Lightning's ``Trainer.predict`` (DDP).

Every process (one per GPU, or per CPU worker) loads the checkpoint, takes its share of the slides and
runs :func:`stgen.predict.predict_file` on each: the slide is predicted whole (chunked as in
``stgen predict``) and written to ``<out>/<name>.h5ad`` atomically and exactly once: the file appears
complete or not at all, and a slide whose output already exists is skipped, so an interrupted cohort is
finished by running the same command again. Slides are shared out by size (largest first, each to the
least loaded process), the same way on every process, with no padding: no slide is predicted twice.

Launch on one machine with Lightning's own launcher (``--devices 4 --strategy ddp``), with
``torchrun --nproc-per-node 4 -m stgen predict-cohort ...`` or on a SLURM cluster with ``srun`` (one
task per GPU): Lightning reads the ranks from the launcher's environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stgen.errors import DataInputError, MissingInputError

if TYPE_CHECKING:
    from stgen.cohort_module import SlideRecord



def assign_slides(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """Indices of the slides each of ``world_size`` processes predicts: largest first, to the least loaded.

    Deterministic (ties by index), so every process computes the same assignment; every slide goes to
    exactly one process.
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    shares: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for i in sorted(range(len(sizes)), key=lambda j: (-sizes[j], j)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        shares[rank].append(i)
        load[rank] += max(int(sizes[i]), 1)
    return shares


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Input ``.h5ad`` files: files as given, folders expanded to their ``*.h5ad`` (sorted).

    Raises:
        FileNotFoundError: an input does not exist or a folder holds no ``.h5ad``.
        ValueError: two inputs would write the same output name.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.h5ad"))
            if not found:
                raise MissingInputError(f"input folder {p} holds no .h5ad file; give slide .h5ad files or folders of them")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise MissingInputError(f"input {p} does not exist; give slide .h5ad files or folders of them")
    names: dict[str, Path] = {}
    for p in paths:
        if p.name in names:
            raise DataInputError(f"inputs {names[p.name]} and {p} would both be written to {p.name}; rename one")
        names[p.name] = p
    return paths


def predict_cohort(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
                   accelerator: str = "auto", devices: int | str = "auto", num_nodes: int = 1,
                   strategy: str = "auto", **predict_kwargs: Any) -> list[SlideRecord]:
    """Predict every input slide once over all processes of a (possibly distributed) Lightning run.

    Returns this process's records (under DDP each process returns its own share).
    """
    import pytorch_lightning as pl

    from stgen.cohort_module import CohortPredictor

    paths = collect_inputs(inputs)
    if not Path(checkpoint).is_file():
        raise MissingInputError(f"checkpoint {checkpoint} does not exist; pass a checkpoint written by stgen run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = CohortPredictor(checkpoint, paths, out, predict_kwargs)
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                         use_distributed_sampler=False, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    records = trainer.predict(module, return_predictions=True) or []
    return [r for r in records if type(r).__name__ == "SlideRecord"]


def _env_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def add_parser(sub: Any) -> None:
    """``stgen predict-cohort``: the CLI of :func:`predict_cohort`."""
    from stgen.cli.common import add_sampling_args

    p = sub.add_parser("predict-cohort",
                       help="predict many slides over processes/GPUs/nodes (Lightning DDP); reruns skip done slides")
    p.add_argument("checkpoint", help="a trained model: <run>/checkpoints/best.ckpt")
    p.add_argument("inputs", nargs="+", help="slide .h5ad files or folders of them")
    p.add_argument("-o", "--out", required=True, help="output folder (existing outputs are skipped, never overwritten)")
    add_sampling_args(p)
    p.add_argument("--feature-key", default="features", help="obsm key of the patch embeddings")
    p.add_argument("--memory-budget", default=None,
                   help="memory per process for one slide, e.g. 6G (default: half of what is available)")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--devices", default="auto", help="processes (GPUs) per node, or auto")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes (as launched by torchrun or SLURM)")
    p.add_argument("--strategy", default="auto", help="ddp for several processes (auto: ddp when devices > 1)")
    p.set_defaults(func=cmd_predict_cohort)


def cmd_predict_cohort(args: Any) -> int:
    from stgen.cli.common import UserError, check_sampling_args
    from stgen.predict import parse_memory
    from stgen.registry import RegistryError

    check_sampling_args(args)
    devices: int | str = int(args.devices) if str(args.devices).isdigit() else args.devices
    try:
        budget = None if args.memory_budget is None else parse_memory(args.memory_budget)
        records = predict_cohort(args.checkpoint, args.inputs, args.out, accelerator=args.accelerator,
                                 devices=devices, num_nodes=args.num_nodes, strategy=args.strategy,
                                 n_samples=args.n_samples, steps=args.steps, seed=args.seed,
                                 feature_key=args.feature_key, memory_budget=budget)
    except (RegistryError, PermissionError) as exc:  # UserInputErrors (bad files, options) pass through
        raise UserError(str(exc)) from exc
    done = sum(r.status == "written" for r in records)
    print(f"[rank {_env_rank()}] {done} slide(s) written, {len(records) - done} skipped", file=sys.stdout)
    return 0
