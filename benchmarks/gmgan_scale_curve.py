#!/usr/bin/env python
"""GM-GAN's quality/diversity trade-off over seeds, from the clustering benchmark's runs.

`benchmarks/clustering.py --model gmgan` keeps every seed's metrics.json in its JSON
(per_seed), including the `scale_curve` the trainer measured after training: for each
sampling scale s (every sigma_k times s), the reference classifier's quality (mean
top-class confidence), diversity (normalised entropy of the mean class distribution)
and FD-classifier (Frechet distance of its features; not FID) of generated samples.
This script averages them over seeds, prints a table, and writes
benchmarks/results/gmgan_scale_curve_<dataset>.json and .png:

    python benchmarks/clustering.py --model gmgan --dataset mnist5k -- --iterations 1500
    python benchmarks/gmgan_scale_curve.py --dataset mnist5k
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
KEYS = ("quality", "diversity", "fd_classifier")


def summarise(result):
    """{scales, <key>_mean [per s], <key>_std [per s], seeds} from a clustering benchmark result."""
    curves = [seed["scale_curve"] for seed in result["gmgan"]["per_seed"] if seed.get("scale_curve")]
    if not curves:
        raise ValueError("the benchmark's runs have no scale_curve (unlabelled data, or --score-samples 0)")
    scales = [p["scale"] for p in curves[0]]
    out = {"scales": scales, "seeds": [seed["seed"] for seed in result["gmgan"]["per_seed"]]}
    for key in KEYS:
        values = np.array([[p[key] for p in curve] for curve in curves])
        out[f"{key}_mean"] = values.mean(0).tolist()
        out[f"{key}_std"] = values.std(0).tolist()
        # How many seeds show the trend (quality falls, diversity rises as s grows from 0.25 to 1).
        low, one = scales.index(min(scales)), scales.index(1.0)
        out[f"{key}_seeds_higher_at_s{scales[low]:g}_than_s1"] = int(np.sum(values[:, low] > values[:, one]))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/gmgan_scale_curve.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k", help="dataset slug of benchmarks/results/gmgan_<dataset>.json")
    parser.add_argument("--results", default=str(RESULTS), help="folder of benchmark JSON files")
    args = parser.parse_args(argv)
    source = Path(args.results) / f"gmgan_{args.dataset}.json"
    if not source.exists():
        print(f"gmgan_scale_curve.py: error: {source} not found; run benchmarks/clustering.py --model gmgan "
              f"--dataset {args.dataset} first", file=sys.stderr)
        return 2
    result = json.loads(source.read_text())
    try:
        curve = summarise(result)
    except ValueError as err:
        print(f"gmgan_scale_curve.py: error: {err}", file=sys.stderr)
        return 2
    curve.update(source=source.name, dataset=result["dataset"], trainer_flags=result.get("trainer_flags"),
                 notes="mean/std (population) over seeds; FD-classifier is the Frechet distance of the reference "
                       "classifier's 64-d features, not FID")
    out = Path(args.results) / f"gmgan_scale_curve_{args.dataset}.json"
    out.write_text(json.dumps(curve, indent=2) + "\n")

    print(f"GM-GAN on {result['dataset']}, seeds {curve['seeds']}, trainer flags {result.get('trainer_flags')}")
    print("| s | quality | diversity | FD-classifier |")
    print("|---|---|---|---|")
    for i, s in enumerate(curve["scales"]):
        print(f"| {s:g} | " + " | ".join(f"{curve[f'{k}_mean'][i]:.3f} ± {curve[f'{k}_std'][i]:.3f}" for k in KEYS)
              + " |")

    from zoo import plots

    plots.curve_png(curve["scales"], {"quality": curve["quality_mean"], "diversity": curve["diversity_mean"]},
                    out.with_suffix(".png"), xlabel="sampling scale s (sigma_k x s)",
                    title=f"GM-GAN on {result['dataset']}: mean of {len(curve['seeds'])} seeds")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
