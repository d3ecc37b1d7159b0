#!/usr/bin/env python
"""KM-GAN's feature-space versus pixel-space (reduced) K-Means on one dataset, as the paper's
section 4.2.1 compares them: clustering ACC/NMI/ARI and the reference classifier's judgement of
generated samples (FD-classifier, quality, diversity, class histogram, mode coverage).

Runs `python -m trainers.kmgan --space feature|pixel` per seed (run directories under
--work-dir; a run directory that already holds a finished run with the same flags is reused)
and writes one JSON file and a table.

    python benchmarks/kmgan_space.py [--dataset mnist5k] [--seeds 0 1] [--iterations 600]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/kmgan_space.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--coverage-threshold", type=float, default=0.02,
                        help="a class counts as covered when at least this share of generated samples is judged "
                             "to be it")
    parser.add_argument("--work-dir", default="/tmp/kmgan_space")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kmgan_space_mnist5k.json"))
    args = parser.parse_args(argv)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    rows = {}
    for space in ("feature", "pixel"):
        per_seed = []
        for seed in args.seeds:
            run_dir = Path(args.work_dir) / f"{space}-seed{seed}"
            flags = ["--dataset", args.dataset, "--space", space, "--seed", str(seed), "--iterations",
                     str(args.iterations), "--quiet", "--no-export"]
            config = run_dir / "config.json"
            reuse = (run_dir / "metrics.json").exists() and config.exists() and all(
                json.loads(config.read_text()).get(k) == v for k, v in
                (("dataset", args.dataset), ("space", space), ("seed", seed), ("iterations", args.iterations)))
            if not reuse:
                result = subprocess.run([sys.executable, "-m", "trainers.kmgan", "--run-dir", str(run_dir), *flags],
                                        cwd=REPO, env=env, capture_output=True, text=True)
                if result.returncode:
                    sys.exit(f"kmgan_space.py: error: {space} seed {seed} failed: {result.stderr.strip()[-500:]}")
            m = json.loads((run_dir / "metrics.json").read_text())
            judge = m["judge"]
            per_seed.append({"seed": seed, "acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"],
                             "fd_classifier": judge["fd_classifier"], "quality": judge["quality"],
                             "diversity": judge["diversity"], "class_histogram": judge["class_histogram"],
                             "classes_covered": int(sum(v >= args.coverage_threshold
                                                        for v in judge["class_histogram"])),
                             "wall_seconds": m["wall_seconds"], "ms_per_train_step": m.get("ms_per_train_step"),
                             "run_dir": str(run_dir), "reused": reuse})
        keys = ("acc", "nmi", "ari", "fd_classifier", "quality", "diversity", "classes_covered")
        rows[space] = {**{f"{k}_mean": float(np.mean([p[k] for p in per_seed])) for k in keys},
                       **{f"{k}_std": float(np.std([p[k] for p in per_seed])) for k in keys}, "per_seed": per_seed}
    result = {"benchmark": "kmgan_space", "dataset": args.dataset, "seeds": args.seeds,
              "iterations": args.iterations, "coverage_threshold": args.coverage_threshold, **rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| space | ACC | FD-classifier | quality | diversity | classes covered |")
    print("|---|---|---|---|---|---|")
    for space, r in rows.items():
        print(f"| {space} | {r['acc_mean']:.3f} ± {r['acc_std']:.3f} | {r['fd_classifier_mean']:.0f} ± "
              f"{r['fd_classifier_std']:.0f} | {r['quality_mean']:.3f} | {r['diversity_mean']:.3f} | "
              f"{r['classes_covered_mean']:.1f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
