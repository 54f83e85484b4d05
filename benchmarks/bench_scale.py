"""Whole-slide scale: training step and whole-slide prediction vs N, each case in a fresh process.

Each case runs ``benchmarks/scale.py`` in its own interpreter (one thread) so that its peak RSS is its
own; the step's or prediction's own seconds and the peak RSS go into ``extra_info`` (``seconds``,
``peak_rss_gib``, ...), which ``benchmarks/report.py`` turns into a table and a log-log plot. The
pytest-benchmark time of a case also counts the interpreter start and the data set-up.

Default sizes keep the run to a few minutes; ``STGEN_BENCH_FULL=1`` adds the large ones (fa_local
training at 10k, 20k and 100k spots, prediction at 100k and 1M spots: about an hour on one thread).
"""

from __future__ import annotations

import os

import pytest
from scale import run_case

FULL = os.environ.get("STGEN_BENCH_FULL") == "1"
FEATURES = 1024

TRAIN = [("mlp", n) for n in (1000, 5000, 10000)] + [("gnn", n) for n in (1000, 5000, 10000)]
TRAIN += [("fa_local", n) for n in ((1000, 5000, 10000, 20000, 100000) if FULL else (1000, 5000))]
PREDICT = [(n, f) for n in ((10_000, 100_000, 1_000_000) if FULL else (10_000,)) for f in (64,)]
if FULL:
    PREDICT.append((1_000_000, 1024))


def _record(benchmark, argv: list[str]) -> dict:
    rows: list[dict] = []
    benchmark.pedantic(lambda: rows.append(run_case(argv)), rounds=1, iterations=1)
    row = rows[-1]
    if "error" in row:
        pytest.fail(f"{' '.join(argv)}: {row['error']}")
    benchmark.extra_info.update(row)
    return row


@pytest.mark.parametrize(("encoder", "n"), TRAIN, ids=[f"{e}-train-{n // 1000}k" for e, n in TRAIN])
def test_train_step(benchmark, encoder: str, n: int) -> None:
    benchmark.group = "scale-train"
    row = _record(benchmark, ["train", "--n", str(n), "--encoder", encoder, "--features", str(FEATURES)])
    assert row["n_spots"] == n


@pytest.mark.parametrize(("n", "features"), PREDICT, ids=[f"predict-{n // 1000}k-F{f}" for n, f in PREDICT])
def test_predict_slide(benchmark, n: int, features: int) -> None:
    benchmark.group = "scale-predict"
    budget = "3G" if features <= 256 else "5G"
    row = _record(benchmark, ["predict", "--n", str(n), "--features", str(features), "--memory-budget", budget])
    assert row["finite"]
