"""Turn a benchmark run into a Markdown table and a log-log plot of time and peak memory vs N.

Reads pytest-benchmark JSON (``pytest benchmarks/ --benchmark-json=run.json``) and/or the JSON lines
of ``benchmarks/scale.py compare --json``. A row's time is ``extra_info['seconds']`` (the step's own
time, measured inside the case's process) when present, else pytest-benchmark's mean; its memory is
``peak_rss_gib`` (whole process) or ``peak_rss_mb`` (rise during the call). Rows are grouped into one
series per (tree, case, encoder, features)::

    python benchmarks/report.py run.json scale.jsonl --table out.md --plot out.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def load_rows(paths: list[str]) -> list[dict]:
    """Flat rows (``series``, ``n_spots``, ``seconds``, ``memory_gib``) from the given result files."""
    rows: list[dict] = []
    for path in paths:
        text = Path(path).read_text()
        if path.endswith(".json") and text.lstrip().startswith("{") and '"benchmarks"' in text[:100_000]:
            for b in json.loads(text)["benchmarks"]:
                info = dict(b.get("extra_info", {}))
                if "n_spots" not in info:
                    continue
                info.setdefault("seconds", b["stats"]["mean"])
                info.setdefault("case", info.get("mode", b.get("group", "")))
                rows.append(_flatten(info, tree=Path(path).stem))
        else:
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    if "error" not in row and "seconds" in row:  # skip failed cases and other results
                        rows.append(_flatten(row, tree=row.get("tree", Path(path).stem)))
    return rows


def _flatten(info: dict, tree: str) -> dict:
    memory = info.get("peak_rss_gib")
    kind = "peak RSS"
    if memory is None and info.get("peak_rss_mb") is not None:
        memory, kind = info["peak_rss_mb"] / 1024, "RSS rise"
    parts = [str(info.get("tree", tree)), str(info.get("case", "")), str(info.get("encoder", ""))]
    if info.get("features"):
        parts.append(f"F={info['features']}")
    return {"series": " ".join(p for p in parts if p), "n_spots": int(info["n_spots"]),
            "seconds": float(info["seconds"]), "memory_gib": memory, "memory_kind": kind,
            "rise_gib": info.get("rise_gib"), "load": info.get("load")}


def table(rows: list[dict]) -> str:
    """Markdown table: one line per series and N; KiB per spot of the rise during the call when known."""
    out = ["| series | spots | seconds | memory GiB | rise GiB | KiB per spot (rise) | load |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["series"], r["n_spots"])):
        mem, rise = r["memory_gib"], r.get("rise_gib")
        if rise is None and r["memory_kind"] == "RSS rise":
            rise = mem
        per_spot = "" if rise is None else f"{rise * 2**20 / r['n_spots']:.0f}"
        out.append(f"| {r['series']} | {r['n_spots']:,} | {r['seconds']:.2f} | "
                   f"{'' if mem is None else f'{mem:.2f}'} ({r['memory_kind']}) | "
                   f"{'' if rise is None else f'{rise:.2f}'} | {per_spot} | "
                   f"{'' if r['load'] is None else r['load']} |")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: str) -> None:
    """Two log-log panels, time and memory vs N, one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        series[r["series"]].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = plt.get_cmap("tab20")
    for i, (name, pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda r: r["n_spots"])
        ns = [r["n_spots"] for r in pts]
        style = {"color": colours(i % 20), "linestyle": "--" if name.startswith("before") else "-",
                 "marker": "os^Dv"[i % 5], "label": name}
        axes[0].plot(ns, [r["seconds"] for r in pts], **style)
        mem = [(r["n_spots"], r["memory_gib"]) for r in pts if r["memory_gib"] is not None]
        if mem:
            axes[1].plot(*zip(*mem, strict=True), **style)
    for ax, label in zip(axes, ("seconds (one thread unless the series says otherwise)", "peak memory, GiB"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("spots N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("stgen scale benchmarks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="pytest-benchmark .json and/or scale.py .jsonl files")
    p.add_argument("--table", default=None, help="write the Markdown table here (default: print it)")
    p.add_argument("--plot", default=None, help="write the log-log PNG here")
    args = p.parse_args(argv)
    rows = load_rows(args.results)
    if not rows:
        print("no rows with n_spots in the given files", file=sys.stderr)
        return 1
    md = table(rows)
    if args.table:
        Path(args.table).write_text(md)
    else:
        print(md)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
