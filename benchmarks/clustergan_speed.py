#!/usr/bin/env python
"""ClusterGAN training speed: milliseconds per iteration of the real training step.

Builds the model exactly as `python -m trainers.clustergan` does (same defaults, same
Adam optimizers, same strategy choice), feeds it the trainer's distributed batches of
real data, and times iterations of `--n-critic` critic updates + one generator/encoder
update, each step called as the trainer calls it (`common.replicated_step`, results
read back to the host after every step). After `--warmup` iterations (tracing,
compilation), `--iterations` iterations are timed; the median is the headline figure.

    python benchmarks/clustergan_speed.py                 # batch 64, mnist5k, n_critic 1
    python benchmarks/clustergan_speed.py --jit           # XLA-compiled per-replica steps
    python benchmarks/clustergan_speed.py --iterations 3 --warmup 1 --out /tmp/s.json   # smoke

`--jit` compiles each per-replica step function with XLA (`tf.function(jit_compile=True)`
inside `strategy.run`); `--jit whole-step` compiles the whole replicated step instead
(one replica only; on a CPU this was the faster of the two, per-replica the slower
than no XLA at all). The JSON (`--out`, default benchmarks/results/clustergan_speed.json)
holds ms_per_iteration (median, mean, min, p90, all samples), the per-phase medians, the
settings and the machine (including the load average: timings on a busy machine are noise).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from trainers import common  # noqa: E402

PROG = "clustergan_speed.py"


def build_parser():
    parser = argparse.ArgumentParser(prog=f"python benchmarks/{PROG}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k", help="dataset spec, as for the trainers (sets the shapes)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--clusters", type=int, default=10, help="number of clusters K")
    parser.add_argument("--n-critic", type=int, default=1, help="critic updates per timed iteration")
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (tracing, compilation)")
    parser.add_argument("--jit", nargs="?", const="per-replica", default=None, choices=["per-replica", "whole-step"],
                        help="XLA. `--jit` alone (= per-replica): jit_compile the per-replica step functions run "
                             "by strategy.run (any number of replicas); `--jit whole-step`: jit_compile the whole "
                             "replicated step with the batch fetched outside it (one replica only)")
    parser.add_argument("--strategy", default="auto", choices=["auto", "one", "mirrored"],
                        help="tf.distribute strategy, as for the trainers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "clustergan_speed.json"),
                        help="output JSON")
    return parser


def machine_info():
    """The machine a timing was taken on, with its load average (timings on a busy machine are noise)."""
    import tensorflow as tf

    info = {"platform": platform.platform(), "processor": cpu_name(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    return info


def cpu_name():
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def whole_step_jit(strategy, step_fn):
    """`common.replicated_step` compiled as a whole with XLA. The iterator op cannot be
    compiled, so the next batch is fetched eagerly and passed in."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def compiled(*args):
        outputs = strategy.run(step_fn, args=args)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in outputs.items()}

    def step(iterator=None):
        return compiled() if iterator is None else compiled(next(iterator))

    return step


def main(argv=None):
    args = build_parser().parse_args(argv)
    for flag in ("batch_size", "n_critic", "iterations"):
        if getattr(args, flag) < 1:
            sys.exit(f"{PROG}: error: --{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if args.warmup < 0:
        sys.exit(f"{PROG}: error: --warmup must be >= 0 (got {args.warmup})")
    try:
        dataset = common.zoo_data.load_dataset(args.dataset, seed=args.seed)
        common.check_fits(args.clusters, args.batch_size, len(dataset))
    except (common.zoo_data.DataError, common.UsageError) as err:
        sys.exit(f"{PROG}: error: {err}")

    import keras
    import tensorflow as tf

    from zoo.clustergan import ClusterGAN

    keras.utils.set_random_seed(args.seed)
    strategy = common.make_strategy(args.strategy)
    # The trainer's model and optimizers (trainers/clustergan.py, main).
    with strategy.scope():
        model = ClusterGAN(dataset.input_shape, args.clusters, n_critic=args.n_critic, g_batch_size=args.batch_size,
                           seed=args.seed)
        model.compile()  # the trainer's default optimizers

    batches = common.distributed_batches(strategy, (dataset.x,), args.batch_size, args.seed)
    if args.jit == "whole-step":
        if strategy.num_replicas_in_sync != 1:
            sys.exit(f"{PROG}: error: --jit whole-step needs one replica (XLA compiles for one device); "
                     f"use --jit per-replica with {strategy.num_replicas_in_sync} replicas")
        critic_step, generator_step = whole_step_jit(strategy, model.critic_step), whole_step_jit(
            strategy, model.generator_step)
    else:
        def per_replica(fn):
            return tf.function(fn, jit_compile=True) if args.jit else fn

        critic_step = common.replicated_step(strategy, per_replica(model.critic_step))
        generator_step = common.replicated_step(strategy, per_replica(model.generator_step))

    def iteration():
        """One training iteration; returns (critic seconds, generator seconds)."""
        tick = time.perf_counter()
        for _ in range(args.n_critic):
            values = critic_step(batches)
            float(values["d_loss"])  # read back, as the trainer does after every step
        tock = time.perf_counter()
        float(generator_step()["g_loss"])
        return tock - tick, time.perf_counter() - tock

    print(f"{PROG}: {dataset.name} {dataset.input_shape}, batch {args.batch_size}, n_critic {args.n_critic}, "
          f"{strategy.num_replicas_in_sync} replica(s), jit {args.jit}: {args.warmup} warm-up + "
          f"{args.iterations} timed iterations", flush=True)
    started = time.perf_counter()
    for _ in range(args.warmup):
        iteration()
    warmup_seconds = time.perf_counter() - started
    samples = np.array([iteration() for _ in range(args.iterations)])
    total_ms = 1000 * samples.sum(axis=1)

    def stats(ms):
        return {"median": round(float(np.median(ms)), 2), "mean": round(float(np.mean(ms)), 2),
                "min": round(float(np.min(ms)), 2), "p90": round(float(np.percentile(ms, 90)), 2)}

    result = {
        "benchmark": "clustergan_speed",
        "ms_per_iteration": {**stats(total_ms), "samples": [round(float(v), 2) for v in total_ms]},
        "ms_critic_updates_per_iteration": stats(1000 * samples[:, 0]),
        "ms_generator_update": stats(1000 * samples[:, 1]),
        "iteration": f"{args.n_critic} critic update(s) + 1 generator/encoder update",
        "dataset": dataset.name,
        "input_shape": list(dataset.input_shape),
        "batch_size": args.batch_size,
        "clusters": args.clusters,
        "n_critic": args.n_critic,
        "latent_dim": model.latent_dim,
        "jit": args.jit or "off",
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "warmup_seconds": round(warmup_seconds, 2),
        "argv": [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)],
        "machine": machine_info(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ms per iteration: median {result['ms_per_iteration']['median']:.1f}  "
          f"(critic {result['ms_critic_updates_per_iteration']['median']:.1f} + "
          f"generator {result['ms_generator_update']['median']:.1f}; mean {result['ms_per_iteration']['mean']:.1f}, "
          f"min {result['ms_per_iteration']['min']:.1f}, p90 {result['ms_per_iteration']['p90']:.1f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
