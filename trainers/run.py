"""One training run, the same for every model: strategy, run directory, TensorBoard,
checkpoints and the end-of-run outputs (figures, metrics.json, SavedModels).

The loop of `trainers.driver` builds the model inside `run.strategy.scope()`, hands it to
`run.track`, books every optimizer update with `run.step_done` and ends with `run.finish`.
"""

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from trainers import common


def start(argv, task_class):
    """The opening every trainer shares: the config (flags refilled by --resume, or a
    config given whole), the dataset, the trainer's own checks, seeds, and the Run. Returns
    (args, dataset, run); `args` is the task's config."""
    model_name, validate = task_class.name, task_class.validate
    args = common.parse_args(task_class.build_parser(), argv, model_name, task_class.config_class)
    common.tflog.configure(args.verbose)
    dataset = common.zoo_data.load_dataset(args.dataset, seed=args.seed, data_dir=args.data_dir,
                                           labels_file=args.labels_file, memory_budget=args.memory_budget << 20)
    # Bad input fails here, before TensorFlow is imported.
    validate(args, dataset)
    common.check_fits(args.clusters, args.batch_size, len(dataset))
    common.tflog.import_tensorflow(args.verbose)

    import keras

    keras.utils.set_random_seed(args.seed)
    return args, dataset, Run(args, model_name, dataset)


def _settable_rate(optimizer):
    """True when `optimizer`'s learning rate is a variable (a float rate), not a schedule."""
    import keras

    return isinstance(optimizer.learning_rate, keras.Variable)


class TrainingDiverged(common.RunFailed):
    """Too many non-finite steps and no recoveries left."""


class Run:
    def __init__(self, args, model_name, dataset):
        import tensorflow as tf

        self.args, self.model_name, self.dataset = args, model_name, dataset
        if getattr(args, "mixed_precision", "off") == "bfloat16" and not common.bfloat16_is_fast():
            print("note: this CPU has neither AVX512-BF16 nor AMX: bfloat16 is emulated here and slower than "
                  "float32 (--mixed-precision off)", file=sys.stderr)
        self.strategy = common.make_strategy(args.strategy)
        self.chief = common.is_chief(self.strategy)
        self.dir = args.run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.chief and not args.resume:
            config = {k: v for k, v in dataclasses.asdict(args).items() if k != "run_dir"}
            common.write_json(self.dir / "config.json", config)
        self.writer = (tf.summary.create_file_writer(str(self.dir / "logs")) if self.chief
                       else tf.summary.create_noop_writer())
        if args.deterministic:
            tf.config.experimental.enable_op_determinism()
        import keras

        # Before the trainer builds its model: layers take the policy when they are made.
        precision = getattr(args, "mixed_precision", "off")
        keras.mixed_precision.set_global_policy("float32" if precision == "off" else f"mixed_{precision}")
        self.global_step = tf.Variable(0, dtype=tf.int64, name="global_step")
        self.timings = {}  # phase -> seconds of every step
        self.seconds = {}  # activity -> seconds spent in it, for metrics.json's time breakdown
        self.started = time.time()
        self.bad_steps = 0  # consecutive steps with a non-finite loss (skipped in the graph)
        self.recoveries = 0

    # -- state -------------------------------------------------------------------------
    def track(self, model, **trackables):
        """Checkpoints `model`, its optimizers and any trainer state; restores it with --resume."""
        import keras

        from zoo import registry

        self.model = model
        self._posterior = None
        self._posterior_cache = None  # (step, posteriors of every real sample)
        if self.chief and not self.args.resume:
            common.write_json(self.dir / "model.json", registry.describe(model))
        self.optimizers = [t for t in trackables.values() if isinstance(t, keras.optimizers.Optimizer)]
        # Every worker takes part in a save; only the chief's land in the run directory.
        task = getattr(self.strategy, "cluster_resolver", None)
        scratch = None if self.chief else self.dir / "workers" / f"{task.task_type}-{task.task_id}"
        self.checkpoints = common.Checkpoints(self.dir, self.global_step, model=model, write_dir=scratch,
                                              **trackables)
        if self.args.resume:
            rates = [(o, float(o.learning_rate.numpy())) for o in self.optimizers if _settable_rate(o)]
            path = self.checkpoints.restore_latest()
            print(f"resumed from {path} at step {self.step}", file=sys.stderr)
            # The checkpoint holds the rates the run last used (lowered by a NaN recovery, say);
            # learning-rate flags given with --resume set them anew.
            if getattr(self.args, "lr_flags_given", None):
                for optimizer, value in rates:
                    optimizer.learning_rate = value
                print(f"learning rates from {', '.join(self.args.lr_flags_given)} replace the checkpoint's",
                      file=sys.stderr)

    @property
    def wall_seconds(self):
        """Seconds since this process started the run (a --resume starts again from 0)."""
        return round(time.time() - self.started, 1)

    @property
    def step(self):
        return int(self.global_step.numpy())

    def save(self):
        # Only good states are kept: none while the model is skipping non-finite steps.
        if self.step != getattr(self, "_saved_step", None) and not self.bad_steps:
            with self.timed("checkpoints"):
                self.checkpoints.save()
            self._saved_step = self.step

    @contextlib.contextmanager
    def timed(self, activity):
        """Counts the seconds spent in the block under `activity` in metrics.json's `seconds`."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[activity] = self.seconds.get(activity, 0.0) + time.perf_counter() - tick

    # -- the loop ------------------------------------------------------------------------
    def replicated_step(self, step_fn):
        """`step_fn` run on every replica as one tf.function (XLA-compiled with --jit)."""
        return common.replicated_step(self.strategy, step_fn, jit=self.args.jit)

    def progress(self, limit):
        self._progress = common.Progress(limit, self.step, quiet=self.args.quiet)
        return self._progress

    def time_breakdown(self):
        """Where this process's run time went: each activity's seconds (`<phase>_steps`: the
        optimizer updates of a phase, their input pipelines and tracing included), `other`
        for the rest (evaluation metrics, logs, the loop itself) and `total`."""
        total = time.time() - self.started
        spent = {**self.seconds, **{f"{phase}_steps": sum(times) for phase, times in self.timings.items()}}
        seconds = {name: round(value, 1) for name, value in sorted(spent.items())}
        seconds["other"] = round(total - sum(spent.values()), 1)
        seconds["total"] = round(total, 1)
        return seconds

    def step_done(self, phase, description, values, seconds):
        """Books one optimizer update: step counter, timings, progress, logs, periodic checkpoint."""
        values = {name: float(v) for name, v in values.items()}
        timings = self.timings.setdefault(phase, [])
        timings.append(seconds)
        self.global_step.assign_add(1)
        step = self.step
        self._guard_non_finite(step, values)
        # The bar shows this phase's step time as metrics.json will report it.
        self._progress.update(description, values, ms_per_step=step_ms(timings))
        if step % self.args.log_every == 0:
            self.scalars("train", values, step)
        if step % self.args.checkpoint_every == 0:
            self.save()
        return values

    def _guard_non_finite(self, step, values):
        """The model skipped this step's update if its loss was not finite (zoo.base.
        apply_if_finite); after --nan-patience such steps in a row, go back to the last
        checkpoint with lower learning rates, at most --nan-recoveries times."""
        bad = {name: v for name, v in values.items() if not math.isfinite(v)}
        if not bad:
            self.bad_steps = 0
            return
        self.bad_steps += 1
        shown = ", ".join(f"{name}={v}" for name, v in bad.items())
        self._progress.write(f"step {step}: non-finite loss ({shown}); update skipped "
                             f"({self.bad_steps} in a row, limit {self.args.nan_patience})")
        if self.bad_steps < self.args.nan_patience:
            return
        if self.recoveries >= self.args.nan_recoveries or not self.checkpoints.manager.checkpoints:
            raise TrainingDiverged(
                f"training diverged: {self.bad_steps} consecutive non-finite steps at step {step} after "
                f"{self.recoveries} recoveries (--nan-recoveries {self.args.nan_recoveries}); try lower "
                f"learning rates, or resume from {self.dir / 'checkpoints'}")
        path = self.checkpoints.restore_latest()
        self._posterior_cache = None
        self.recoveries += 1
        self.bad_steps = 0
        rates = self.scale_learning_rates(self.args.nan_lr_factor)
        self._saved_step = self.step
        self._progress.bar.n = self.step
        self._progress.write(f"went back to {path} (step {self.step}) with learning rates x{self.args.nan_lr_factor}"
                             f" -> {', '.join(rates)} (recovery {self.recoveries}/{self.args.nan_recoveries})")

    def scale_learning_rates(self, factor):
        """Multiplies every optimizer's learning rate by `factor` (a schedule is left alone);
        the rates live in the optimizers' state, so checkpoints and --resume keep them.
        Returns the new rates as text."""
        rates = []
        for optimizer in self.optimizers:
            if _settable_rate(optimizer):
                optimizer.learning_rate = float(optimizer.learning_rate.numpy()) * factor
                rates.append(f"{float(optimizer.learning_rate.numpy()):.3g}")
        return rates

    def scalars(self, prefix, values, step=None):
        import tensorflow as tf

        with self.writer.as_default(step=self.step if step is None else step):
            for name, value in values.items():
                if isinstance(value, float):
                    tf.summary.scalar(f"{prefix}/{name}", value)

    def interrupted(self):
        self._progress.close()
        self.save()
        print(f"\ninterrupted at step {self.step}; continue with: "
              f"python -m trainers.{self.model_name} --resume --run-dir {self.dir}", file=sys.stderr)
        return 130

    # -- evaluation ----------------------------------------------------------------------
    def posteriors(self):
        """The model's cluster posteriors of every real sample (numpy [N, K])."""
        import tensorflow as tf

        if self._posterior is None:
            self._posterior = tf.function(self.model.cluster_probs, reduce_retracing=True)
        # Asked again at the same step (the trainer's last evaluation, then finish): one pass.
        if self._posterior_cache is None or self._posterior_cache[0] != self.step:
            with self.timed("posteriors"):
                self._posterior_cache = (self.step, common.predict_in_batches(self._posterior, self.dataset.data))
        return self._posterior_cache[1]

    def evaluate(self, probs, subset=None, log=True):
        """Clustering metrics of argmax `probs` on `subset` (default: all samples); `log`
        also writes them to TensorBoard at the current step."""
        y = self.dataset.y
        subset = np.arange(len(probs)) if subset is None else subset
        predictions = probs.argmax(1)
        report = common.clustering_metrics(None if y is None else y[subset], predictions[subset],
                                           self.model.num_clusters)
        if log:
            self.scalars("eval", report)
        return report

    def start_clustering(self, init, fraction):
        """For models that learn from pseudo-labels (an option, not in their papers): a start
        clustering of the data (`init`: kmeans, gmm or umap, as in zoo.baselines) and batches of
        the most confident `fraction` of each cluster's members, labelled with their cluster.
        Returns (metrics of the start clustering, with `init`; its posteriors [N, K]; the batch
        iterator)."""
        from zoo import baselines

        with self.timed("start_clustering"):
            probs = baselines.start_posteriors(init, self.dataset.x, self.model.num_clusters, self.args.seed)
        initial = dict(self.evaluate(probs, log=False), init=init)
        self.write(f"start clustering (--init {init}): {common.format_metrics(initial)}")
        return initial, probs, self.pseudo_labelled(probs, fraction)

    def pseudo_labelled(self, probs, fraction):
        """Batches of the most confident `fraction` of each cluster's members under `probs`
        [N, K], labelled with their cluster (reshuffled by the current step)."""
        from zoo import baselines

        chosen = baselines.confident_subset(probs, fraction)
        return common.distributed_batches(self.strategy, (self.dataset.subset(chosen), probs.argmax(1)[chosen]),
                                          min(self.args.batch_size, len(chosen)), self.args.seed + self.step)

    def recluster(self, features_of, report, probs=None):
        """`--recluster umap`: posteriors [N, K] of a GMM on a UMAP embedding of the features
        `features_of()` computes, numbered as the clusters of `probs` (default: the model's
        current posteriors; zoo.baselines.reclustered); which fit was taken, and with labels
        their ACC, go into `report`. Returns them and a note for the iteration's line."""
        from zoo import baselines

        probs = self.posteriors() if probs is None else probs
        with self.timed("recluster"):
            refined, report["recluster_fit"] = baselines.reclustered(features_of(), probs, self.args.seed)
        if self.dataset.y is None:
            return refined, ""
        metrics = common.clustering_metrics(self.dataset.y, refined.argmax(1), self.args.clusters)
        report["recluster_acc"] = metrics["acc"]
        return refined, f"  (re-clustered: ACC {report['recluster_acc']:.4f})"

    def write(self, text):
        """A line for the user (chief only), above the progress bar."""
        if self.chief:
            self._progress.write(text)

    def note(self, text):
        self.write(f"note: {text}")

    def log_iteration(self, report, text):
        """One line per iteration on screen and in history.jsonl (kept across --resume)."""
        self._progress.write(text)
        report.setdefault("wall_seconds", self.wall_seconds)
        if self.chief:
            with open(self.dir / "history.jsonl", "a") as f:
                f.write(json.dumps(report, default=common.json_default) + "\n")

    def history(self, key):
        return read_history(self.dir, key)

    # -- the end -------------------------------------------------------------------------
    def finish(self, report, title, subset=None, predictions=None, **extra):
        """Final checkpoint, figures, SavedModels and metrics.json; returns the results.
        `predictions` (cluster ids [N]) default to argmax of the posteriors; a model that
        clusters otherwise (e.g. k-means on embeddings) passes its own for the figures."""
        import tensorflow as tf

        from zoo import plots

        self._progress.close()
        wall = time.time() - self.started
        self.save()
        model, data, step = self.model, self.dataset, self.step
        print(f"{title} on {data.name}, K={model.num_clusters}, {step} steps: {common.format_metrics(report)}")
        if not self.chief:
            return report
        subset = np.arange(len(data)) if subset is None else subset
        probs = self.posteriors()
        with self.timed("outputs"):
            predictions = probs.argmax(1) if predictions is None else np.asarray(predictions)
            write_assignments(self.dir / "assignments.csv", data, probs, predictions, sheets_dir=self.dir / "clusters")
            if data.kind == "image":
                noise = model.sample_latent(10, seed=self.args.seed)
                samples = np.stack([model.generate(noise, tf.fill([10], c)).numpy() for c in range(model.num_clusters)])
                plots.sample_grid(samples, self.dir / "samples.png",
                                  title=f"{title} samples (row = cluster), step {step}")
                with self.writer.as_default(step=step):
                    tf.summary.image("samples", plots.grid_image(samples)[None])
            if data.y is not None:
                plots.confusion_png(data.y[subset], predictions[subset], model.num_clusters,
                                    self.dir / "confusion.png",
                                    title=f"{title} on {data.name}: ACC {report['acc']:.3f}",
                                    class_names=data.class_names)
            if model.embedding_size == 2:
                embedding = common.predict_in_batches(tf.function(model.embed, reduce_retracing=True), data.data)
                plots.scatter_png(embedding, predictions, self.dir / "embedding_by_cluster.png",
                                  title="embedding (d = 2) by cluster", legend_title="cluster")
                if data.y is not None:
                    plots.scatter_png(embedding, data.y, self.dir / "embedding_by_label.png",
                                      title="embedding (d = 2) by true label", legend_title="label")
            self.writer.flush()

        results = {
            **report,
            "model": self.model_name,
            "dataset": data.name,
            "samples": len(data),
            "labels_known": data.y is not None,
            **({"class_names": data.class_names} if data.class_names else {}),
            "assignments": "assignments.csv",
            "steps": step,
            "wall_seconds": round(wall, 2),
            **{f"ms_per_{phase}_step": step_ms(times) for phase, times in self.timings.items()},
            "replicas": self.strategy.num_replicas_in_sync,
            "seed": self.args.seed,
            **extra,
        }
        if not self.args.no_export:
            from export import export_servables

            metadata = {"dataset": data.name, "metrics": {k: v for k, v in report.items() if k != "cluster_sizes"}}
            with self.timed("export"):
                results["export"] = {name: str(path) for name, path in
                                     export_servables(model, self.dir / "export", metadata=metadata).items()}
        results["seconds"] = self.time_breakdown()
        common.write_json(self.dir / "metrics.json", results)
        print(f"run directory: {self.dir} (which sample is in which cluster: assignments.csv"
              + (", clusters/*.png)" if data.kind == "image" else ")"))
        return results


def write_assignments(csv_path, dataset, probs, predictions, sheets_dir=None):
    """`csv_path` (path or index, cluster, confidence, true label) for every sample of `dataset`,
    clustered as `predictions` with posteriors `probs`, and with `sheets_dir` (image data) a
    contact sheet per cluster there."""
    from zoo import assignments

    predictions = np.asarray(predictions)
    confidence = np.asarray(probs)[np.arange(len(predictions)), predictions]
    csv_path = assignments.write_csv(csv_path, predictions, confidence, paths=dataset.paths, labels=dataset.y,
                                     class_names=dataset.class_names)
    if sheets_dir is not None and dataset.kind == "image":
        shown = assignments.members_to_show(predictions, confidence, probs.shape[1])
        assignments.write_contact_sheets(sheets_dir, dataset.take, shown, probs.shape[1])
    return csv_path


def read_history(run_dir, key):
    """The records of RUN_DIR/history.jsonl that have `key` (e.g. em_iteration), one per value
    of it: an iteration repeated after a kill between its log line and its checkpoint keeps
    its last record."""
    path = Path(run_dir) / "history.jsonl"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    records = [r for r in map(_history_record, lines) if isinstance(r, dict) and key in r]
    return list({json.dumps(r[key], default=str): r for r in records}.values())


def _history_record(line):
    """One line of history.jsonl, or None. A process killed mid-write leaves a cut-off line,
    to which the next run appends its own record: that record is recovered from its `{`."""
    for start in (i for i, char in enumerate(line) if char == "{"):
        try:
            return json.loads(line[start:])
        except ValueError:
            continue
    return None


# Steps of each phase left out of its step time: tracing and warm-up.
_WARMUP_STEPS = 3


def step_ms(durations):
    """A phase's step time in ms: the median of its step `durations` (seconds) after the first
    few (tracing). A median, since the first step after each new input pipeline (a new EM
    iteration's soft labels, say) is several times slower and would pull a mean up."""
    steady = durations[_WARMUP_STEPS:] or durations
    return round(1000 * float(np.median(steady)), 2) if steady else None
