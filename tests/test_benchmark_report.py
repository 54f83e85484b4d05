"""benchmarks/report.py: a benchmark run becomes a Markdown table and a log-log PNG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_table_and_plot_from_scale_rows_and_pytest_benchmark_json(tmp_path):
    report = _report()
    rows = [{"case": "train", "encoder": "fa_local", "n_spots": n, "features": 1024, "seconds": s,
             "peak_rss_gib": p, "rise_gib": r, "tree": tree, "load": 5.0}
            for tree, n, s, p, r in [("before", 10000, 60.0, 6.8, 5.5), ("after", 10000, 38.0, 2.4, 1.2),
                                     ("after", 100000, 480.0, 12.8, 10.8)]]
    rows.append({"error": "boom", "argv": ["train"]})  # failed cases are left out
    jsonl = tmp_path / "scale.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bench = tmp_path / "run.json"
    bench.write_text(json.dumps({"benchmarks": [
        {"group": "scale-train", "stats": {"mean": 1.5}, "extra_info": {"case": "train", "encoder": "mlp",
                                                                         "n_spots": 10000, "peak_rss_gib": 1.4}},
        {"group": "forward-1k", "stats": {"mean": 0.1}, "extra_info": {"encoder": "gnn"}},  # no n_spots
    ]}))
    table, png = tmp_path / "t.md", tmp_path / "p.png"
    assert report.main([str(jsonl), str(bench), "--table", str(table), "--plot", str(png)]) == 0
    lines = table.read_text().splitlines()
    assert len(lines) == 2 + 4
    assert any("before train fa_local F=1024 | 10,000 | 60.00" in line and "| 577 |" in line for line in lines)
    assert any("run train mlp | 10,000 | 1.50" in line for line in lines)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert report.main([str(empty)]) == 1
