#!/usr/bin/env python
"""What the trainers' machinery costs per training step, for every model and phase.

For each model it builds two variants from the trainer's own flags and `build_model`:

- **trainer**: the step exactly as `python -m trainers.MODEL` runs it: the trainer's strategy,
  `Run.replicated_step` (one `tf.function` around `strategy.run`, the batch pulled from the
  distributed dataset inside it), the NaN guard (`zoo.base.apply_if_finite`), and
  `Run.step_done` after every update (values read back, step counter, progress, TensorBoard
  scalars every --log-every steps, a checkpoint every --checkpoint-every steps);
- **minimal**: the same networks, losses and batch in one plain `tf.function` under the default
  strategy, updates applied straight with `optimizer.apply_gradients` (no guard), one scalar
  read back per step (to time it).

Phases are timed in alternating rounds (trainer, minimal, trainer, ...), so that a busy
machine slows both alike. Two tf.functions built alike can run several % apart on a small
machine (1-15 % on a 2-core VM), so each variant is built `--instances` times and
every copy is timed in every round: the headline is each phase's median ms per step over all
copies and rounds, the ratio trainer / minimal, and how far apart the copies of one variant
ran (the noise floor of that ratio). With `--versus float32`, the second variant is instead the
trainer's step in float32 and the first in `--mixed-precision`: the ratio is then the speed-up of
the precision.
With `--versus keras-adam`, both are the trainer's step, the second with `keras.optimizers.Adam`
in place of `zoo.optimizers.Adam`: the speed-up of the fused update.

    python benchmarks/step_overhead.py [--models ganem clustergan gmgan kmgan] [--rounds 5] [--steps 10] \\
        [--instances 3] [-- TRAINER_FLAGS (e.g. --strategy one)]
    python benchmarks/step_overhead.py --mixed-precision bfloat16 --versus float32
    python benchmarks/step_overhead.py --versus keras-adam
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from clustergan_speed import machine_info  # noqa: E402

from trainers import common, driver  # noqa: E402

MODELS = ("ganem", "clustergan", "gmgan", "kmgan")


def phases(name, model, args):
    """(phase, step function of one batch, which batches it takes) as the trainer runs them
    with its default flags: 'soft' = (x, soft labels w), 'labelled' = (x, cluster ids) as
    the pseudo-labelled batches of a start clustering, 'x' = real samples alone."""
    if name == "ganem":
        return [("m", model.m_step, "soft"), ("e", model.e_step, "labelled")]
    if name == "clustergan":
        return [("critic", model.critic_step, "x"), ("generator", model.generator_step, "labelled")]
    if name == "gmgan":
        return [("gan", model.gan_step, "labelled"),
                ("enet", lambda data: model.e_step(data, scale=args.enet_scale), "labelled")]
    return [("train", model.alternation_step, "labelled")]


def batch_arrays(dataset, k, seed):
    rng = np.random.default_rng(seed)
    n = len(dataset)
    soft = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    return {"x": (dataset.data,), "soft": (dataset.data, soft),
            "labelled": (dataset.data, soft.argmax(1).astype(np.int32))}


def prepare(name, model, dataset, arrays, args):
    """What the trainer does between building a model and its first step."""
    if name == "kmgan":
        x, labels = arrays["labelled"]
        sample = np.arange(min(len(x), 2000))
        model.init_centers(dataset.take(sample), labels=labels[sample])


def plain_batches(arrays, batch_size, seed):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(arrays).shuffle(len(arrays[0]), seed=seed).repeat()
    ds = ds.batch(batch_size, drop_remainder=True).map(lambda *b: tuple(common._to_float(t) for t in b))
    return iter(ds.prefetch(tf.data.AUTOTUNE))


def trainer_steps(name, flags, dataset, work, precision, keras_adam=False):
    """{phase: a callable running one step as the trainer does}, built through the trainer
    (with `keras_adam`, its optimizers are `keras.optimizers.Adam` instead of the zoo's)."""
    import keras

    import zoo.optimizers
    from trainers.run import Run

    trainer = driver.task_of(name)
    args = common.parse_args(trainer.build_parser(), [*flags, "--run-dir", str(work / precision),
                                                      "--mixed-precision", precision], name, trainer.config_class)
    trainer.validate(args, dataset)
    run = Run(args, name, dataset)
    zoo_adam = zoo.optimizers.Adam
    zoo.optimizers.Adam = keras.optimizers.Adam if keras_adam else zoo_adam
    try:
        with run.strategy.scope():
            model = trainer.build_model(args, dataset.input_shape)
    finally:
        zoo.optimizers.Adam = zoo_adam
    run.track(model, **{k: v for k, v in vars(model).items() if k.endswith("_optimizer")})
    run.progress(10**9)
    arrays = batch_arrays(dataset, args.clusters, args.seed)
    prepare(name, model, dataset, arrays, args)
    steps = {}
    for phase, fn, kind in phases(name, model, args):
        step = run.replicated_step(fn)
        batches = common.distributed_batches(run.strategy, arrays[kind], args.batch_size, args.seed)

        def one(step=step, batches=batches, phase=phase):
            tick = time.perf_counter()
            values = step(batches)
            run.step_done(phase, phase, values, time.perf_counter() - tick)

        steps[phase] = one
    return steps


def minimal_steps(name, flags, dataset, precision):
    """{phase: one step of the same networks and losses in a plain tf.function}."""
    import keras
    import tensorflow as tf

    trainer = driver.task_of(name)
    args = trainer.parse(flags)
    trainer.validate(args, dataset)
    keras.mixed_precision.set_global_policy("float32" if precision == "off" else f"mixed_{precision}")
    keras.utils.set_random_seed(args.seed)
    model = trainer.build_model(args, dataset.input_shape)

    def apply_plainly(updates, loss):
        for optimizer, grads, variables in updates:
            optimizer.apply_gradients(zip(grads, variables))

    model.apply_updates = apply_plainly  # no guard: the plain `optimizer.apply_gradients`
    arrays = batch_arrays(dataset, args.clusters, args.seed)
    prepare(name, model, dataset, arrays, args)
    steps = {}
    for phase, fn, kind in phases(name, model, args):
        batches = plain_batches(arrays[kind], args.batch_size, args.seed)
        compiled = tf.function(lambda fn=fn, batches=batches: fn(next(batches)))
        steps[phase] = lambda compiled=compiled: float(next(iter(compiled().values())))
    return steps


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, trainer_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python benchmarks/step_overhead.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--dataset", default="mnist5k", help="dataset spec (sets the shapes)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per variant")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per phase, copy and round")
    parser.add_argument("--instances", type=int, default=3,
                        help="copies of each variant, built apart and all timed in every round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per phase first (tracing)")
    parser.add_argument("--mixed-precision", choices=["off", "bfloat16"], default="off",
                        help="precision of the trainer's step (and of the minimal one)")
    parser.add_argument("--versus", choices=["minimal", "float32", "keras-adam"], default="minimal",
                        help="what the trainer's step is compared with: the minimal step, the trainer's own "
                             "step in float32 (the speed-up of --mixed-precision), or the trainer's step with "
                             "keras.optimizers.Adam (the speed-up of zoo.optimizers.Adam's fused update)")
    parser.add_argument("--out", default=None,
                        help="output JSON (default benchmarks/results/step_overhead[_<precision>|_keras_adam].json)")
    args = parser.parse_args(argv)
    if args.versus == "float32" and args.mixed_precision == "off":
        parser.error("--versus float32 needs --mixed-precision bfloat16")
    suffix = {"minimal": "", "float32": f"_{args.mixed_precision}", "keras-adam": "_keras_adam"}[args.versus]
    out = Path(args.out or REPO / "benchmarks" / "results" / f"step_overhead{suffix}.json")

    common.tflog.import_tensorflow(False)
    from zoo.data import load_dataset

    dataset = load_dataset(args.dataset, seed=0)
    flags = ["--dataset", args.dataset, "--batch-size", str(args.batch_size), "--quiet", "--no-export",
             "--init", "kmeans", *trainer_flags]  # the start's pseudo-labelled path, without UMAP's cost
    labels = {"minimal": ("trainer", "minimal"), "float32": (args.mixed_precision, "float32"),
              "keras-adam": ("zoo_adam", "keras_adam")}[args.versus]
    results = {}
    with tempfile.TemporaryDirectory(prefix="step_overhead-") as work:
        for name in args.models:
            # Identical tf.functions built apart differ by several % on a small machine, so each
            # variant is built --instances times and every instance is timed in every round.
            variants = {label: [] for label in labels}
            for instance in range(args.instances):
                run_dir = Path(work) / f"{name}-{instance}"
                variants[labels[0]].append(trainer_steps(name, flags, dataset, run_dir, args.mixed_precision))
                variants[labels[1]].append(
                    minimal_steps(name, flags, dataset, args.mixed_precision) if args.versus == "minimal"
                    else trainer_steps(name, flags, dataset, run_dir / "keras_adam", args.mixed_precision,
                                       keras_adam=True) if args.versus == "keras-adam"
                    else trainer_steps(name, flags, dataset, run_dir, "off"))
            phase_names = list(variants[labels[0]][0])
            for copies in variants.values():
                for steps in copies:
                    for one in steps.values():
                        for _ in range(args.warmup):
                            one()
            times = {label: {phase: [[] for _ in range(args.instances)] for phase in phase_names} for label in labels}
            for _ in range(args.rounds):
                for instance in range(args.instances):
                    for label in labels:
                        for phase, one in variants[label][instance].items():
                            tick = time.perf_counter()
                            for _ in range(args.steps):
                                one()
                            times[label][phase][instance].append(1000 * (time.perf_counter() - tick) / args.steps)
            results[name] = {}
            for phase in phase_names:
                medians = {label: statistics.median(t for copy in times[label][phase] for t in copy)
                           for label in labels}
                # How far apart identical copies of one variant run: the noise floor of the ratio.
                spread = {label: max(m) / min(m) - 1 for label in labels
                          for m in [[statistics.median(copy) for copy in times[label][phase]]]}
                ratio = medians[labels[0]] / medians[labels[1]]
                results[name][phase] = {**{f"ms_{label}": round(m, 2) for label, m in medians.items()},
                                        "ratio": round(ratio, 3),
                                        "instance_spread": {label: round(v, 3) for label, v in spread.items()},
                                        "rounds": {label: [[round(t, 1) for t in copy] for copy in times[label][phase]]
                                                   for label in labels}}
                what = "overhead" if args.versus == "minimal" else "speed-up"
                shown = (f"{100 * (ratio - 1):+.1f} %" if args.versus == "minimal" else f"x{1 / ratio:.2f}")
                noise = "/".join(f"{100 * v:.0f}" for v in spread.values())
                print(f"{name:10s} {phase:9s} " + "  ".join(f"{label} {m:7.1f} ms" for label, m in medians.items())
                      + f"   {what} {shown}   (copies of one variant {noise} % apart)", flush=True)
    payload = {"benchmark": "step_overhead", "dataset": args.dataset, "batch_size": args.batch_size,
               "trainer_flags": trainer_flags,
               "mixed_precision": args.mixed_precision, "versus": args.versus, "rounds": args.rounds,
               "steps_per_round": args.steps, "instances": args.instances, "models": results, "machine": machine_info(),
               "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    common.write_json(out, payload)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
