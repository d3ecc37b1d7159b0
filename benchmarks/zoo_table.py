#!/usr/bin/env python
"""Every model's clustering benchmark side by side, with the baselines of the same runs.

Reads the JSON files `benchmarks/clustering.py` wrote into benchmarks/results/ (one per
model and dataset: `<model>_<dataset>.json`) and prints one Markdown table per dataset:
ACC (Hungarian), NMI, ARI as mean ± std over seeds, wall seconds per run, seeds.

    python benchmarks/zoo_table.py [--results benchmarks/results]
"""
import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _pm(summary, key, fmt="{:.3f}"):
    mean, std = summary.get(f"{key}_mean"), summary.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{fmt.format(mean)} ± {fmt.format(std)}" if std is not None else fmt.format(mean)


def load_rows(results_dir):
    """{dataset: [(method, summary, seeds)]} from the clustering benchmark's JSON files."""
    tables = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        result = json.loads(path.read_text())
        model = result.get("model", "ganem" if "ganem" in result else None)
        # Only the clustering benchmark's own files (`<model>_<dataset>.json`), not derived tables.
        if model not in result or path.stem != result.get("benchmark") or "baselines" not in result:
            continue
        rows = tables.setdefault(result["dataset"], {})
        seeds = ",".join(map(str, result.get("seeds", [])))
        rows[model] = (result[model], seeds, path.name)
        for name, summary in result["baselines"].items():
            # Baselines are recomputed by every benchmark run; the same seeds give the same figures.
            rows.setdefault(name, (summary, seeds, path.name))
    return tables


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/zoo_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder of benchmark JSON files")
    args = parser.parse_args(argv)
    tables = load_rows(args.results)
    if not tables:
        print(f"zoo_table.py: error: no clustering benchmark results in {args.results}", file=sys.stderr)
        return 2
    for dataset, rows in tables.items():
        print(f"\n### {dataset}\n")
        print("| method | ACC (Hungarian) | NMI | ARI | wall s / run | seeds | file |")
        print("|---|---|---|---|---|---|---|")
        for method, (summary, seeds, file) in rows.items():
            print(f"| {method} | {_pm(summary, 'acc')} | {_pm(summary, 'nmi')} | {_pm(summary, 'ari')} | "
                  f"{_pm(summary, 'wall_seconds', '{:.0f}')} | {seeds} | {file} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
