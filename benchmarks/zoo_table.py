#!/usr/bin/env python
"""Every model's clustering benchmark side by side, with the baselines of the same runs.

Reads the JSON files `benchmarks/clustering.py` wrote into benchmarks/results/ (one per
model and dataset: `<model>_<dataset>.json`) and prints one Markdown table per dataset:
ACC (Hungarian), NMI, ARI as mean ± std over seeds, wall seconds per run, seeds.

    python benchmarks/zoo_table.py [--results benchmarks/results] [--plot]

`--plot` also draws ACC against wall time of every model's newest default-flag run per dataset,
with the baselines as horizontal lines (`acc_vs_time_<dataset>.png`, as the clustering
benchmark redraws after every run).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

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


# Trainer flags that leave a run at its defaults (they change what is written, not what is learned).
_NEUTRAL_FLAGS = {"--no-export", "--no-judge", "--quiet"}  # --no-judge: older runs
BASELINE_NAMES = {"kmeans_pixels": "k-means on pixels", "gmm_pca50": "GMM on PCA-50", "umap_gmm": "UMAP + GMM"}


def default_runs(results_dir, dataset):
    """{model: result} for `dataset`: per model, the newest clustering benchmark run with the
    trainer's default flags."""
    newest = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        model = result.get("model") if isinstance(result, dict) else None
        if (model is None or result.get("dataset") != dataset or "baselines" not in result
                or not isinstance(result.get(model), dict) or "acc_mean" not in result[model]
                or not set(result.get("trainer_flags", [])) <= _NEUTRAL_FLAGS):
            continue
        if model not in newest or result.get("timestamp", "") > newest[model].get("timestamp", ""):
            newest[model] = result
    return newest


def accuracy_time_figure(results_dir, dataset, path=None):
    """ACC against wall time of every model's default runs on `dataset` (one line per seed, from
    its evaluations during training; a model whose runs kept no curve: its final points), with
    the classical baselines of the same benchmark runs as horizontal lines (mean over seeds).
    Writes `results_dir/acc_vs_time_<dataset>.png` (or `path`); returns the path, or None
    without results."""
    runs = default_runs(results_dir, dataset)
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path) if path else Path(results_dir) / f"acc_vs_time_{_slug(dataset)}.png"
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    baselines = {}
    for i, (model, result) in enumerate(sorted(runs.items())):
        summary, colour = result[model], f"C{i}"
        label = f"{model} {summary['acc_mean']:.3f} ± {summary['acc_std']:.3f}"
        argv = result.get("benchmark_argv", [])
        jobs = argv[argv.index("--jobs") + 1] if "--jobs" in argv[:-1] else "1"
        if jobs != "1":  # seeds trained side by side share the cores: their wall times are longer
            label += f" ({jobs} runs at once)"
        for j, run in enumerate(summary["per_seed"]):
            curve = run.get("curve") or [[run["wall_seconds"], run["acc"]]]
            minutes, acc = np.array(curve, dtype=float).T
            ax.plot(minutes / 60, acc, marker="o" if len(curve) == 1 else ".", color=colour, alpha=0.8,
                    linewidth=1.2, label=label if j == 0 else None)
        for name, base in result["baselines"].items():
            baselines.setdefault(name, base)
    for i, (name, base) in enumerate(sorted(baselines.items())):
        ax.axhline(base["acc_mean"], linestyle="--", linewidth=1, color="0.35", alpha=0.5 + 0.2 * i)
        ax.annotate(f"{BASELINE_NAMES.get(name, name)} {base['acc_mean']:.3f} ({base['wall_seconds_mean']:.0f} s)",
                    (0, base["acc_mean"]), xytext=(2, 2), textcoords="offset points", fontsize=7, color="0.25")
    ax.set_xlabel("wall time of the run (minutes, 2-core CPU unless the JSON says otherwise)")
    ax.set_ylabel("ACC (Hungarian)")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7, title="model: final ACC over seeds", title_fontsize=7)
    ax.set_title(f"{dataset}: ACC against wall time, default flags, one line per seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _slug(spec):
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in Path(spec).stem or spec)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/zoo_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder of benchmark JSON files")
    parser.add_argument("--plot", action="store_true",
                        help="also draw acc_vs_time_<dataset>.png per dataset into --results (as every "
                             "clustering benchmark run does)")
    args = parser.parse_args(argv)
    tables = load_rows(args.results)
    if not tables:
        print(f"zoo_table.py: error: no clustering benchmark results in {args.results}", file=sys.stderr)
        return 2
    for dataset, rows in tables.items():
        if args.plot:
            print(f"wrote {accuracy_time_figure(args.results, dataset)}")
        print(f"\n### {dataset}\n")
        print("| method | ACC (Hungarian) | NMI | ARI | wall s / run | seeds | file |")
        print("|---|---|---|---|---|---|---|")
        for method, (summary, seeds, file) in rows.items():
            print(f"| {method} | {_pm(summary, 'acc')} | {_pm(summary, 'nmi')} | {_pm(summary, 'ari')} | "
                  f"{_pm(summary, 'wall_seconds', '{:.0f}')} | {seeds} | {file} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
