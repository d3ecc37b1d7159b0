#!/usr/bin/env python
"""Reproducible clustering benchmark of any zoo model, with classical baselines on the same data.

Runs `python -m trainers.<model>` once per seed as a subprocess (run directories under
--work-dir), reads each run's metrics.json, runs k-means on pixels and a GMM on PCA-50 for the
same seeds, and writes one JSON file (--out) plus a summary table. Any flags after `--` go to
the trainer unchanged, e.g.

    python benchmarks/clustering.py --model ganem --seeds 0 1 2 -- --init kmeans --max-steps 100
    python benchmarks/clustering.py --model clustergan --dataset synthetic

`python benchmarks/zoo_table.py` puts the results of every model side by side.

Metric names are honest: `acc` is Hungarian (one-to-one) ACC, `purity` is purity
(= many-to-one accuracy), `nmi` is NMI (arithmetic), `ari` is the adjusted Rand index.
Standard deviations are population std over seeds (np.std).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from trainers.common import UsageError, check_fits  # noqa: E402
from trainers.config import HelpFormatter  # noqa: E402
from zoo import data as zoo_data  # noqa: E402
from zoo.baselines import BASELINES, SUMMARY_KEYS, run_baselines, summarize  # noqa: E402
from zoo.registry import MODELS  # noqa: E402

PROG = "clustering.py"
# Flags the benchmark sets itself for every seed: giving them after `--` would be ambiguous.
_RESERVED = ("--dataset", "--seed", "--run-dir", "--clusters", "--data-dir", "--resume")
_DROP_KEYS = ("history", "export")


def _die(message: str, code: int = 2):
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python benchmarks/{PROG}",
        usage=f"python benchmarks/{PROG} [options] [-- TRAINER_FLAGS...]",
        description=__doc__.split("\n\n")[0] + " Flags after `--` are passed to `python -m "
        "trainers.MODEL` unchanged (see `python -m trainers.MODEL --help`); the benchmark sets "
        "--dataset, --seed, --run-dir, --clusters, --data-dir and --quiet itself.",
        epilog="Output JSON: benchmark, dataset, clusters, seeds, trainer_argv (exact argv per "
               "seed), machine (platform, cpu_count, tensorflow, gpus), timestamp, model, MODEL (mean/std "
               "over seeds of acc = Hungarian ACC, nmi, ari, purity, many_to_one_acc, wall_seconds, "
               "every ms_per_* timing the trainer reports, plus per_seed metrics) and baselines "
               "(same fields for kmeans_pixels, gmm_pca50 and umap_gmm).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default="ganem", choices=sorted(MODELS), help="which zoo model to train")
    parser.add_argument("--dataset", default="mnist5k", help="dataset spec, as for the trainers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, one trainer run each")
    parser.add_argument("--clusters", type=int, default=None,
                        help="number of clusters K (default: the dataset's number of classes, else 10)")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory (tfds names only)")
    parser.add_argument("--work-dir", default=str(REPO / "benchmarks" / "runs"),
                        help="parent folder of the per-seed trainer run directories")
    parser.add_argument("--out", default=None,
                        help="output JSON (default: benchmarks/results/<model>_<dataset>.json)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the k-means / GMM baselines")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained at once, one process each (more than 1 only pays with spare cores; "
                             "wall_seconds then include the contention)")
    return parser


def split_argv(argv):
    """Splits at the first `--`: (benchmark flags, trainer flags)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def slug(spec: str) -> str:
    text = Path(spec).stem if (os.sep in spec or spec.endswith(".npz")) else spec
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "dataset"


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:  # TensorFlow only for its version and the GPU list
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = []
        for device in tf.config.list_physical_devices("GPU"):
            entry = {"name": device.name}
            try:
                entry.update(tf.config.experimental.get_device_details(device))
            except Exception:  # noqa: BLE001 - details are best effort
                pass
            gpus.append({k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in entry.items()})
        info["gpus"] = gpus
    except Exception as exc:  # noqa: BLE001
        info["tensorflow"] = None
        info["gpus"] = []
        info["tensorflow_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return info


def fresh_directory(path: Path) -> Path:
    """Creates `path`, or `path-2`, `path-3`, ... if taken: two benchmarks started in the same
    second must not train into the same run directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")


def run_trainer(argv, log_path: Path):
    """Runs one trainer; returns (exit code, seconds). stdout+stderr go to log_path."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.call(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    return rc, time.perf_counter() - started


def accuracy_curve(metrics) -> list:
    """[[wall seconds, ACC], ...] of a run: its evaluations during training (history lines with
    wall_seconds), then the final one, for the ACC-against-time figure."""
    points = [[h["wall_seconds"], h["acc"]] for h in metrics.get("history", [])
              if isinstance(h.get("wall_seconds"), (int, float)) and isinstance(h.get("acc"), (int, float))]
    if isinstance(metrics.get("wall_seconds"), (int, float)) and "acc" in metrics:
        points.append([metrics["wall_seconds"], metrics["acc"]])
    return points


def gain_over_start(per_seed) -> dict:
    """What training added to where it started, for models that record their first soft labels
    (`initial` in metrics.json, as GAN-EM does): `initial_<metric>_mean/std` and
    `gain_<metric>_mean/std` (final minus initial, per seed)."""
    if not all("acc" in run.get("initial", {}) for run in per_seed):
        return {}
    keys = ("acc", "nmi", "ari")
    out = {f"initial_{k}": v for k, v in summarize([run["initial"] for run in per_seed], keys=keys).items()}
    gains = [{key: run[key] - run["initial"][key] for key in keys} for run in per_seed]
    out.update({f"gain_{k}": v for k, v in summarize(gains, keys=keys).items()})
    return out


def _pm(summary: dict, key: str, fmt: str = "{:.3f}") -> str:
    mean, std = summary.get(f"{key}_mean"), summary.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{fmt.format(mean)}±{fmt.format(std)}" if std is not None else fmt.format(mean)


def print_table(rows) -> None:
    header = ("method", "ACC mean±std", "NMI", "ARI", "wall s")
    body = [(name, _pm(s, "acc"), _pm(s, "nmi"), _pm(s, "ari"), _pm(s, "wall_seconds", "{:.1f}"))
            for name, s in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        print(line(r))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, trainer_flags = split_argv(argv)
    args = build_parser().parse_args(ours)
    for flag in trainer_flags:
        if flag.split("=", 1)[0] in _RESERVED:
            _die(f"{flag.split('=', 1)[0]} is set by the benchmark; give it before `--` "
                 f"(--dataset, --seeds, --clusters, --data-dir, --work-dir), not after")
    if len(set(args.seeds)) != len(args.seeds):
        _die(f"--seeds has duplicates: {args.seeds}")
    if args.jobs < 1:
        _die(f"--jobs must be at least 1 (got {args.jobs})")

    # Validate the dataset here, so a bad spec fails in one line before any training.
    try:
        first = zoo_data.load_dataset(args.dataset, seed=args.seeds[0], data_dir=args.data_dir)
    except zoo_data.DataError as err:
        _die(err)
    k = args.clusters or first.num_classes or 10
    try:
        check_fits(k, 1, len(first))
    except UsageError as err:
        _die(err)
    if first.y is None and not args.no_baselines:
        _die(f"dataset '{first.name}' has no labels, so nothing can be scored")

    name = f"{args.model}_{slug(args.dataset)}"
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{name}.json"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = fresh_directory(Path(args.work_dir).resolve() / f"{name}-{stamp}")
    timestamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    print(f"benchmark {name}: dataset {args.dataset}, K={k}, seeds {args.seeds}, runs under {work}",
          flush=True)
    per_seed, trainer_argv = [], {}
    for seed in args.seeds:
        run_dir = work / f"seed{seed}"  # made by the trainer, which takes only a new or empty one
        cmd = [sys.executable, "-m", f"trainers.{args.model}", "--dataset", args.dataset, "--clusters", str(k),
               "--seed", str(seed), "--run-dir", str(run_dir), "--quiet"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        trainer_argv[str(seed)] = cmd + trainer_flags
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        finished = pool.map(lambda seed: run_trainer(trainer_argv[str(seed)], work / f"seed{seed}.log"),
                            args.seeds)
        outcomes = dict(zip(args.seeds, finished))
    for seed in args.seeds:
        run_dir, cmd = work / f"seed{seed}", trainer_argv[str(seed)]
        rc, seconds = outcomes[seed]
        metrics_path = run_dir / "metrics.json"
        if rc != 0 or not metrics_path.exists():
            tail = (work / f"seed{seed}.log").read_text(errors="replace").strip().splitlines()[-8:]
            print("\n".join(tail), file=sys.stderr)
            _die(f"trainer failed for seed {seed} (exit code {rc}); command: {shlex.join(cmd)}; "
                 f"log: {work / f'seed{seed}.log'}", code=rc if rc else 1)
        metrics = json.loads(metrics_path.read_text())
        metrics["curve"] = accuracy_curve(metrics)
        metrics = {key: v for key, v in metrics.items() if key not in _DROP_KEYS}
        metrics.update(seed=seed, run_dir=str(run_dir), process_seconds=round(seconds, 2))
        per_seed.append(metrics)
        print(f"seed {seed}: ACC {metrics['acc']:.4f}  NMI {metrics['nmi']:.4f}  ARI {metrics['ari']:.4f}  "
              f"steps {metrics.get('steps')}  wall {metrics.get('wall_seconds')} s "
              f"(process {seconds:.1f} s)", flush=True)

    timings = sorted({key for m in per_seed for key in m if key.startswith("ms_per_")})
    # Model-specific variants, e.g. ClusterGAN's kmeans_acc next to its argmax_acc.
    variants = sorted(key for key in per_seed[0] if key.endswith(("_acc", "_nmi", "_ari", "_purity"))
                      and key not in SUMMARY_KEYS and all(isinstance(m.get(key), (int, float)) for m in per_seed))
    model = summarize(per_seed, keys=(*SUMMARY_KEYS, "test_error", *variants))
    model.update(summarize(per_seed, keys=("wall_seconds", "process_seconds", *timings)))
    # Where the trainers' time went (metrics.json `seconds`), averaged over seeds.
    activities = sorted({name for m in per_seed for name in m.get("seconds", {})})
    if activities:
        model["seconds_mean"] = {name: round(float(np.mean([m.get("seconds", {}).get(name, 0.0) for m in per_seed])), 1)
                                 for name in activities}
        print("time per run (mean s): " + ", ".join(f"{name} {value}" for name, value in model["seconds_mean"].items()),
              flush=True)
    model.update(gain_over_start(per_seed))
    model["per_seed"] = per_seed

    baselines = {}
    if not args.no_baselines:
        cache = {args.seeds[0]: first}

        def dataset_for(seed):  # same data the trainer loaded for this seed
            if seed not in cache:
                cache[seed] = zoo_data.load_dataset(args.dataset, seed=seed, data_dir=args.data_dir)
            return cache[seed]

        print(f"baselines: {', '.join(BASELINES)} ...", flush=True)
        baselines = run_baselines(dataset_for, k, args.seeds)

    result = {
        "benchmark": name,
        "dataset": args.dataset,
        "dataset_name": first.name,
        "samples": len(first),
        "num_classes": first.num_classes,
        "clusters": k,
        "acc_meaningful": bool(first.num_classes is None or k <= first.num_classes),
        "seeds": list(args.seeds),
        "benchmark_argv": [sys.executable, str(Path(__file__).resolve()), *argv],
        "trainer_flags": trainer_flags,
        "trainer_argv": trainer_argv,
        "machine": machine_info(),
        "timestamp": timestamp,
        "metric_notes": "acc = Hungarian (one-to-one) ACC; purity = many_to_one_acc; "
                        "*_std = population std over seeds (np.std)",
        "model": args.model,
        args.model: model,
        "baselines": baselines,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")

    judged = [run["judge"] for run in model["per_seed"] if "class_histogram" in run.get("judge", {})]
    if judged and len(judged) == len(model["per_seed"]):
        # As the KM-GAN paper's Fashion figure: which classes the generated samples are.
        from zoo import plots

        fd = [j["fd_classifier"] for j in judged]
        figure = out.with_name(out.stem + "_classes.png")
        plots.class_histogram_png([j["class_histogram"] for j in judged], figure,
                                  title=f"{args.model} on {args.dataset}: generated samples by class (reference "
                                        f"classifier)\nmean and std of {len(judged)} seeds; FD-classifier "
                                        f"{np.mean(fd):.0f} ± {np.std(fd):.0f}")
        print(f"wrote {figure}")

    from benchmarks.zoo_table import accuracy_time_figure

    figure = accuracy_time_figure(out.parent, result["dataset"])
    if figure:
        print(f"wrote {figure} (every model's results for {result['dataset']} in {out.parent})")
    print()
    print_table([(args.model, model), *baselines.items()])
    if "gain_acc_mean" in model:
        steps = ", ".join(f"{run['initial']['acc']:.3f} -> {run['acc']:.3f}" for run in per_seed)
        print(f"{args.model} started from ACC {_pm(model, 'initial_acc')} and gained {_pm(model, 'gain_acc')} "
              f"(per seed: {steps})")
    if not result["acc_meaningful"]:
        print(f"note: K={k} > {first.num_classes} classes, so Hungarian ACC penalises surplus "
              f"clusters; see purity / many_to_one_acc in the JSON")
    print(f"wrote {out}")
    return 0


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


if __name__ == "__main__":
    sys.exit(main())
