"""Benchmark session: collects ``bench_*.py``, runs single-threaded, measures peak memory, prints ratios."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from workloads import Workload, make_step, peak_memory_mb  # noqa: E402

#: label -> {"mean_s", "min_s", "rounds", "peak_mb"}, filled by the ``measure`` fixture
RESULTS: dict[str, dict[str, float | int | None]] = {}

#: (numerator, denominator) label pairs whose time and memory ratios the summary prints
RATIOS: list[tuple[str, str]] = [
    ("global_attention-forward-5k", "fa_local-forward-5k"),
    ("global_attention-train-5k", "fa_local-train-5k"),
    ("global_attention-forward-1k", "fa_local-forward-1k"),
    ("global_attention-train-1k", "fa_local-train-1k"),
    ("fa_local-naive-forward-2k", "fa_local-forward-2k"),
    ("fa_local-naive-train-2k", "fa_local-train-2k"),
]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(previous)


def rounds_for(work: Workload) -> tuple[int, int]:
    """``(warmup_rounds, rounds)``: more rounds for cheap calls, one for the costly ones."""
    cheap = work.encoder in ("mlp", "gnn") or work.mode == "forward"
    if work.n_spots <= 1000:
        return 1, 5
    if work.n_spots <= 5000:
        return 0, 3 if cheap else 1
    return 0, 3 if work.encoder in ("mlp", "gnn") else 1


@pytest.fixture(scope="session")
def peak_memory(request: pytest.FixtureRequest) -> dict[str, float | None]:
    """Peak RSS rise (MB) of every selected workload, measured once in a separate interpreter."""
    opt = request.config.getoption
    if opt("benchmark_disable", False) or opt("benchmark_skip", False):
        return {}
    if not sys.platform.startswith("linux"):
        warnings.warn("peak memory is measured on Linux only (/proc/self/status)", stacklevel=1)
        return {}
    works = []
    for item in request.session.items:
        work = getattr(getattr(item, "callspec", None), "params", {}).get("work")
        if isinstance(work, Workload) and work not in works:
            works.append(work)
    return peak_memory_mb(works)


@pytest.fixture
def measure(peak_memory: dict[str, float | None]):
    """``measure(benchmark, work, group, rounds=None)``: time ``work`` with pytest-benchmark and record its peak memory."""

    def run(benchmark, work: Workload, group: str, rounds: tuple[int, int] | None = None) -> None:
        step = make_step(work)
        warmup, rounds = rounds or rounds_for(work)
        benchmark.group = group
        peak = peak_memory.get(work.label)
        benchmark.extra_info.update(
            {
                "encoder": work.encoder,
                "n_spots": work.n_spots,
                "mode": work.mode,
                "split_attention": work.split_attention,
                "peak_rss_mb": peak,
            }
        )
        benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=warmup)
        stats = getattr(getattr(benchmark, "stats", None), "stats", None)
        RESULTS[work.label] = {
            "mean_s": getattr(stats, "mean", None),
            "min_s": getattr(stats, "min", None),
            "rounds": rounds,
            "peak_mb": peak,
        }

    return run


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pytest_terminal_summary(terminalreporter) -> None:
    if not RESULTS or all(r["mean_s"] is None for r in RESULTS.values()):
        return
    tr = terminalreporter
    tr.section("stgen benchmark summary (1 thread)")
    tr.write_line(f"{'workload':38s} {'mean s':>9s} {'min s':>9s} {'rounds':>6s} {'peak MB':>9s}")
    for label, r in RESULTS.items():
        tr.write_line(
            f"{label:38s} {_fmt(r['mean_s'], '9.3f')} {_fmt(r['min_s'], '9.3f')} {r['rounds']:6d} "
            f"{_fmt(r['peak_mb'], '9.0f')}"
        )
    lines = []
    for num, den in RATIOS:
        a, b = RESULTS.get(num), RESULTS.get(den)
        if not a or not b:
            continue
        ratio = {
            key: a[key] / b[key] if a[key] and b[key] else None for key in ("mean_s", "min_s", "peak_mb")
        }
        lines.append(
            f"{num} / {den}: time x{_fmt(ratio['mean_s'], '.2f')} (min x{_fmt(ratio['min_s'], '.2f')}), "
            f"peak memory x{_fmt(ratio['peak_mb'], '.2f')}"
        )
    if lines:
        tr.write_line("")
        tr.write_line("ratios (> 1: the first is slower / uses more memory)")
        for line in lines:
            tr.write_line(line)
