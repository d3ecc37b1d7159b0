#!/usr/bin/env python
"""The GAN-EM paper's results table, reproduced on the data available offline.

For every row of the paper's MNIST table that can be run here (unsupervised K = 10,
20, 30; semi-supervised with 100 and 1000 labels) it runs `benchmarks/ganem_mnist5k.py`
(one trainer run per seed, same data, classical baselines alongside) and prints our
error beside the paper's:

    python benchmarks/ganem_paper_table.py --dataset mnist5k --seeds 0 1 2 [--jobs 3] [-- TRAINER_FLAGS]

Rows run as separate processes (`--rows ...` each, same `--tag`) are put into one table by
`--collect --tag T`, which trains nothing.

Errors, in %: unsupervised K = 10 is 1 - Hungarian ACC; K = 20 and 30 are
1 - many-to-one ACC (Hungarian ACC cannot match 20 clusters to 10 classes); with
labels it is the error on the examples not used as labels. The paper's numbers are on
full MNIST (60,000 images); mnist5k has 5,000, so they are a reference, not a target.
Writes benchmarks/results/ganem_paper_table_<dataset>.json with every row's JSON.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (row, benchmark flags, trainer flags, metric giving the error, paper's MNIST error %)
ROWS = [
    ("unsupervised K=10", ["--clusters", "10"], [], "acc", 4.20),
    ("unsupervised K=20", ["--clusters", "20"], [], "many_to_one_acc", 4.04),
    ("unsupervised K=30", ["--clusters", "30"], [], "many_to_one_acc", 3.97),
    ("100 labels", ["--clusters", "10"], ["--labels", "100"], "test_error", 1.09),
    ("1000 labels", ["--clusters", "10"], ["--labels", "1000"], "test_error", 1.03),
]


def error_percent(summary, metric):
    """(mean, std) error in % from a benchmark summary."""
    mean, std = summary[f"{metric}_mean"], summary[f"{metric}_std"]
    return (100 * mean if metric == "test_error" else 100 * (1 - mean)), 100 * std


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, trainer_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (benchmarks/clustering.py --jobs)")
    parser.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], help="rows to run (names as printed)")
    parser.add_argument("--tag", default="", help="added to every result file name, e.g. the variant the trainer "
                                                  "flags select (ganem_paper_table_<dataset>_<tag>_<row>.json)")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: build the table from the rows' JSON files already written (e.g. rows run "
                             "as separate processes)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/ganem_paper_table_<dataset>[_<tag>].json)")
    args = parser.parse_args(ours)
    unknown = set(args.rows) - {r[0] for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {[r[0] for r in ROWS]}")
    results_dir = REPO / "benchmarks" / "results"
    stem = f"ganem_paper_table_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    table = []
    for name, bench_flags, row_flags, metric, paper in ROWS:
        if name not in args.rows:
            continue
        row_out = results_dir / f"{stem}_{name.replace(' ', '_').replace('=', '')}.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / "ganem_mnist5k.py"), "--dataset", args.dataset,
               "--seeds", *map(str, args.seeds), "--jobs", str(args.jobs), "--out", str(row_out), *bench_flags,
               "--", *row_flags, *trainer_flags]
        if args.collect:
            if not row_out.exists():
                print(f"ganem_paper_table.py: error: --collect: no results for row {name!r} ({row_out})",
                      file=sys.stderr)
                return 2
        else:
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            if subprocess.run(cmd, cwd=REPO).returncode != 0:
                print(f"row {name!r} failed", file=sys.stderr)
                return 1
        row_result = json.loads(row_out.read_text())
        summary = row_result["ganem"]
        ours_mean, ours_std = error_percent(summary, metric)
        table.append({"row": name, "error_mean": round(ours_mean, 2), "error_std": round(ours_std, 2),
                      "error_from": metric, "paper_mnist_error": paper, "seeds": row_result["seeds"],
                      "row_trainer_flags": row_result["trainer_flags"], "json": str(row_out.relative_to(REPO))})
    out = Path(args.out) if args.out else results_dir / f"{stem}.json"
    seeds = sorted({seed for row in table for seed in row["seeds"]}) if args.collect else args.seeds
    out.write_text(json.dumps({"dataset": args.dataset, "seeds": seeds, "trainer_flags": trainer_flags,
                               "rows": table}, indent=2) + "\n")
    print(f"\n| {args.dataset} | ours: error % (mean ± std, {len(seeds)} seeds) | paper, full MNIST |")
    print("|---|---|---|")
    for row in table:
        print(f"| {row['row']} | {row['error_mean']:.2f} ± {row['error_std']:.2f} | {row['paper_mnist_error']:.2f} |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
