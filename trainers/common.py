"""Machinery every trainer of the zoo shares: flags, strategy, run directory,
distributed steps, checkpoints, progress, evaluation and the end-of-run outputs.

A trainer (e.g. `trainers.ganem`) adds its model's flags and its training schedule;
everything a user sees the same way across models lives here.
"""

import argparse
import atexit
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np  # noqa: E402

from zoo import data as zoo_data  # noqa: E402
from zoo import tflog  # noqa: E402

# Quieten TensorFlow's C++ logging before it is imported anywhere (--verbose undoes it).
tflog.configure()


class UsageError(Exception):
    """A bad flag or bad input: reported as one line on stderr with exit code 2."""


class RunFailed(Exception):
    """A run that cannot go on (e.g. it diverged): one line on stderr, exit code 1."""


# -- flags ------------------------------------------------------------------------
def resolve_start(args, dataset):
    """Fills in the flags of a model that learns from a start clustering: the paper's values
    under --paper, then the zoo's defaults, except that data too large for memory starts from
    none (a start clustering fits all samples at once)."""
    args.resolve_paper()
    if args.init is None and dataset.streamed:
        args.init = "none"
    args.resolve_defaults()


def check_fits(clusters, batch_size, samples):
    """UsageError unless --clusters and --batch-size fit a dataset of `samples` samples."""
    if clusters < 2:
        raise UsageError(f"--clusters must be at least 2 (got {clusters})")
    if clusters > samples:
        raise UsageError(f"--clusters {clusters} exceeds the number of samples ({samples})")
    if batch_size > samples:
        raise UsageError(f"--batch-size {batch_size} exceeds the number of samples ({samples})")


def parse_args(parser, argv, model_name, config_class):
    """The run's `config_class` from the flags in `argv`, or `argv` itself when it is a
    `config_class` (the Python API); with --resume the saved config of the run fills in what
    is not given on the command line. Ends by claiming the run directory for this process
    (see `claim_run_dir`)."""
    from trainers import config

    if isinstance(argv, config_class):
        config.check(argv)
        args = dataclasses.replace(argv)
    else:
        args = config.parse(parser, config_class, argv)
    explicit_run_dir = args.run_dir is not None
    run_dir = resolve_run_dir(args, model_name)
    if args.resume and not isinstance(argv, config_class):
        per_run = config.per_run_fields(config_class)
        saved = saved_config(parser, run_dir / "config.json", per_run)
        # argparse fills in defaults only for names not in the namespace, so
        # flags given now override the saved ones and the rest come back.
        args = config.parse(parser, config_class, argv, namespace=argparse.Namespace(**saved))
        run_dir = resolve_run_dir(args, model_name)
        # Learning-rate flags given again win over the rates in the checkpoint (see Run.track).
        rates = [f"lr_{network}" for network in config_class.learning_rates()]
        args.lr_flags_given = config.given_flags(parser, argv, rates)
    args.run_dir = run_dir
    claim_run_dir(args, explicit_run_dir)
    return args


def saved_config(parser, path, per_run=()):
    """The flags saved in a run's config.json, each checked and converted by the parser's own
    type and choices, as if given on the command line: the file may be hand-edited,
    truncated or from another version, and must never reach a trainer unchecked. Fields in
    `per_run` describe the process, not the experiment, and are never taken from the file."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"--resume: {path} is not readable JSON: {_first_line(err)}") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume: {path} must hold a JSON object of flags, not a {type(saved).__name__}")
    # A field renamed since the run was saved comes back under its new name.
    renamed = {option[2:].replace("-", "_"): action.targets[0] for option, action in parser.deprecated.items()
               if action.nargs is None and len(action.targets) == 1}
    checked = {}
    for key, value in saved.items():
        key = renamed.get(key, key)
        action = parser.actions.get(key)
        if action is None or key in per_run:
            continue  # not a flag of this trainer (or one never taken from the file)
        flag = action.option_strings[0]
        try:
            checked[key] = _saved_value(action, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise UsageError(f"--resume: {path}: {key} = {json.dumps(value)[:80]} is not a valid {flag}"
                             + (f" (choices: {', '.join(map(str, action.choices))})" if action.choices else "")) \
                from None
    return checked


def _saved_value(action, value):
    """`value` converted as argparse converts the text of `action`'s flag; ValueError if it
    is not a value the flag could have had."""
    if value is None:
        if action.default is None:
            return None
        raise ValueError("null")
    if action.nargs == 0:  # store_true, store_false, --x/--no-x
        if not isinstance(value, bool):
            raise ValueError("not a boolean")
        return value
    if action.nargs is not None and action.nargs != "?":
        raise ValueError("list flags are not restored")
    if isinstance(value, (dict, list, bool)):
        raise ValueError("not a scalar")
    if action.type is None or action.type is str:
        if not isinstance(value, str):
            raise ValueError("not a string")
        converted = value
    else:
        # JSON numbers back to the text a user would type; 64.5 is then no valid int.
        converted = action.type(value if isinstance(value, str) else repr(value))
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError("not finite")
    if action.choices is not None and converted not in action.choices:
        raise ValueError("not a choice")
    return converted


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


# -- owning a run directory ---------------------------------------------------------------
RUN_LOCK = ".lock"
_held = {}  # run directory -> open lock file, held for the life of the process


def _writes_run_dir(args):
    """False for the non-chief workers of a multi-worker run: they share the chief's
    --run-dir but write only to their own scratch folder inside it."""
    if args.strategy not in ("auto", "multiworker"):
        return True
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        task = tf_config.get("task") or {}
        workers = tf_config.get("cluster", {}).get("worker", [])
    except (ValueError, AttributeError):
        return True
    if args.strategy == "auto" and len(workers) < 2:
        return True
    return task.get("type") in (None, "chief") or (task.get("type") == "worker" and int(task.get("index", 0)) == 0)


def claim_run_dir(args, explicit):
    """Makes `args.run_dir` this process's own: a default directory is created exclusively
    (a name taken in the same second gets a suffix); an explicit one may exist but must be
    empty unless --resume; in every case a lock on RUN_DIR/.lock is held until the process
    ends, so two trainers never write into one directory. A directory this process created
    and left empty is removed at exit."""
    if not _writes_run_dir(args):
        return
    run_dir = Path(args.run_dir)
    created = False
    if args.resume or explicit:
        try:
            run_dir.mkdir(parents=True)
            created = True
        except FileExistsError:
            if not run_dir.is_dir():
                raise UsageError(f"--run-dir {run_dir} exists and is not a directory") from None
        except OSError as err:
            raise UsageError(f"cannot create --run-dir {run_dir}: {err.strerror or err}") from None
    else:
        base = run_dir
        for attempt in range(1, 1000):
            run_dir = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                run_dir.mkdir(parents=True)
                created = True
                break
            except FileExistsError:
                continue
            except OSError as err:
                raise UsageError(f"cannot create the run directory {run_dir}: {err.strerror or err}") from None
        else:
            raise UsageError(f"no free run directory name beside {base}; pass --run-dir")
    _lock_run_dir(run_dir)
    if created:
        atexit.register(_remove_if_unused, run_dir)
    elif not args.resume and any(p.name != RUN_LOCK for p in run_dir.iterdir()):
        release_run_dir(run_dir)
        raise UsageError(f"--run-dir {run_dir} is not empty: continue its run with --resume, or pick a new directory "
                         f"(a new run would prune that run's checkpoints)")
    args.run_dir = run_dir


def _lock_run_dir(run_dir):
    import fcntl

    path = Path(run_dir) / RUN_LOCK
    try:
        handle = open(path, "a+")
    except OSError as err:
        raise UsageError(f"cannot write in the run directory {run_dir}: {err.strerror or err}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip()[:40]
        handle.close()
        raise UsageError(f"{run_dir} is in use by another trainer" + (f" (pid {owner})" if owner else "")
                         + "; wait for it or pick another --run-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[str(run_dir)] = handle


def release_run_dir(run_dir):
    """Gives up the lock on `run_dir` (the process's end does the same)."""
    handle = _held.pop(str(run_dir), None)
    if handle is not None:
        handle.close()


def _remove_if_unused(run_dir):
    """At exit: a run directory this process created but never wrote to (the run stopped on
    a usage or data error) is removed, so it is not mistaken for a run."""
    release_run_dir(run_dir)
    try:
        entries = list(Path(run_dir).iterdir())
        if all(p.name == RUN_LOCK for p in entries):
            for p in entries:
                p.unlink()
            Path(run_dir).rmdir()
    except OSError:
        pass


def resolve_run_dir(args, model_name):
    if args.run_dir:
        run_dir = Path(args.run_dir)
        if args.resume and not (run_dir / "config.json").exists():
            raise UsageError(f"--resume: {run_dir} holds no run to resume (no config.json)")
        return run_dir
    tag = Path(args.dataset).stem.replace(":", "_").replace(",", "_").replace("=", "")
    if args.resume:
        runs = sorted(Path("runs").glob(f"{model_name}-{tag}-*/config.json"))
        if not runs:
            raise UsageError(f"--resume: no run of {model_name} on {args.dataset} under runs/; pass --run-dir")
        return runs[-1].parent
    return Path("runs") / f"{model_name}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_main(main_fn, model_name, argv=None):
    """Runs a trainer's main, turning usage and data errors into one line and exit 2."""
    prog = f"trainers.{model_name}"
    try:
        return main_fn(argv)
    except (UsageError, zoo_data.DataError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(1)


# -- strategy ---------------------------------------------------------------------
def make_strategy(kind):
    import tensorflow as tf

    if kind == "auto":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        kind = "multiworker" if len(tf_config.get("cluster", {}).get("worker", [])) > 1 else "mirrored"
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "one":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy([d.name for d in gpus] or ["/cpu:0"])


def bfloat16_is_fast():
    """True where bfloat16 arithmetic runs in hardware: a GPU, or a CPU with AVX512-BF16 or
    AMX-BF16 (elsewhere oneDNN emulates it, slower than float32)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def is_chief(strategy):
    """Only the chief writes files; other workers write to a scratch directory."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def replicated_step(strategy, step_fn, jit=False):
    """A tf.function that runs `step_fn` on every replica and returns its outputs
    averaged across replicas. Given a distributed iterator, it pulls the next batch
    itself (inside the graph) and passes it to `step_fn`.

    With `jit` the step is XLA-compiled: with one replica the whole step (the batch is
    fetched outside, since the iterator op cannot be compiled); with several, each
    replica's step (as Keras does with jit_compile under a strategy)."""
    import tensorflow as tf

    def reduced(outputs):
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in outputs.items()}

    if jit and strategy.num_replicas_in_sync == 1:
        @tf.function(jit_compile=True)
        def compiled(*batch):
            return reduced(strategy.run(step_fn, args=batch))

        return lambda iterator=None: compiled() if iterator is None else compiled(next(iterator))

    replica_fn = tf.function(step_fn, jit_compile=True) if jit else step_fn

    @tf.function
    def step(iterator=None):
        args = () if iterator is None else (next(iterator),)
        return reduced(strategy.run(replica_fn, args=args))

    return step


def _to_float(tensor):
    """uint8 images enter the graph as bytes and become float32 in [0, 1] here."""
    import tensorflow as tf

    return tf.cast(tensor, tf.float32) / 255.0 if tensor.dtype == tf.uint8 else tensor


def _read_rows(pixels, indices):
    """Rows `indices` of a zoo.data.DiskPixels, read from disk inside the input pipeline."""
    import tensorflow as tf

    rows = tf.numpy_function(pixels.read, [indices], tf.uint8, stateful=False)
    return tf.ensure_shape(rows, [None, *pixels.shape[1:]])


def distributed_batches(strategy, arrays, global_batch, seed):
    """An iterator over `input_pipeline(arrays, global_batch, seed)`, split across replicas."""
    ds = input_pipeline(arrays, global_batch, seed)
    if strategy.num_replicas_in_sync == 1:
        # One replica needs no splitting, and a distributed iterator's prefetch to the device
        # made every step up to 2x slower on a 2-core CPU.
        return iter(ds)
    return iter(strategy.experimental_distribute_dataset(ds))


def input_pipeline(arrays, global_batch, seed):
    """An endless shuffled, batched, prefetched dataset of `arrays`. uint8 arrays are images,
    made float32 in [0, 1] batch by batch; an array may also be a zoo.data.DiskPixels, whose
    batches are read from disk as they are needed."""
    import tensorflow as tf

    n = len(arrays[0])
    if any(isinstance(a, zoo_data.DiskPixels) for a in arrays):
        # Shuffle indices, not samples: the samples stay on disk.
        ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.batch(global_batch, drop_remainder=True).map(
            lambda idx: tuple(_read_rows(a, idx) if isinstance(a, zoo_data.DiskPixels) else tf.gather(a, idx)
                              for a in arrays), num_parallel_calls=2, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices(tuple(arrays))
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.batch(global_batch, drop_remainder=True)
    ds = ds.map(lambda *batch: tuple(_to_float(t) for t in batch)).prefetch(2)
    options = pipeline_options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def pipeline_options():
    """tf.data options of every input pipeline here: deterministic, and without autotuning.

    Deleting an iterator waits for tf.data's autotuning thread, which wakes at a period that
    grows towards a minute, and every EM iteration replaces its iterators (docs/models/ganem.md,
    Speed). The pipelines are a shuffle, a batch and a cast: a fixed `prefetch(2)` keeps the
    next batches ready without tuning."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return options


def predict_in_batches(fn, x, batch_size=500):
    """Applies `fn` (a tf.function of one float batch) to a numpy array (uint8 images are made
    float32 in [0, 1]) or a zoo.data.DiskPixels, read from disk a batch ahead, in batches;
    returns numpy."""
    import tensorflow as tf

    if isinstance(x, zoo_data.DiskPixels):
        n = len(x)
        batches = tf.data.Dataset.range(0, n, batch_size).map(
            lambda start: _read_rows(x, tf.range(start, tf.minimum(start + batch_size, n))),
            num_parallel_calls=2, deterministic=True).prefetch(2).with_options(pipeline_options())
    else:
        batches = (tf.constant(x[i : i + batch_size]) for i in range(0, len(x), batch_size))
    outs = [fn(_to_float(batch)).numpy() for batch in batches]
    return np.concatenate(outs, axis=0)


# -- checkpoints ----------------------------------------------------------------------
class Checkpoints:
    """Numbered checkpoints under RUN_DIR/checkpoints, the last few kept.

    TensorFlow writes a checkpoint's files first and the `checkpoint` index last,
    so a reader never takes a half-written checkpoint for the latest one.
    """

    def __init__(self, run_dir, step, max_to_keep=3, write_dir=None, **trackables):
        """Reads from RUN_DIR/checkpoints; writes there too unless `write_dir` says
        otherwise (multi-worker: every worker must take part in a save, but only the
        chief's checkpoints are the run's, so the others write to a scratch folder)."""
        import tensorflow as tf

        self.step = step
        self.checkpoint = tf.train.Checkpoint(step=step, **trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(Path(run_dir) / "checkpoints"),
                                                  max_to_keep=max_to_keep)
        self.writer = (self.manager if write_dir is None else
                       tf.train.CheckpointManager(self.checkpoint, str(write_dir), max_to_keep=1))

    def restore_latest(self):
        """Restores the newest readable checkpoint; a corrupt or truncated one is skipped
        with a warning and the one before it is used."""
        import tensorflow as tf

        candidates = list(reversed(self.manager.checkpoints))
        if not candidates:
            raise UsageError(f"--resume: no checkpoint under {self.manager.directory}")
        for path in candidates:
            try:
                _verify_checkpoint(path)
                self.checkpoint.restore(path).expect_partial()
                return path
            except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as err:
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                print(f"warning: checkpoint {path} is unreadable ({reason}); trying the one before it",
                      file=sys.stderr)
        raise UsageError(f"--resume: no readable checkpoint under {self.manager.directory}")

    def save(self):
        return self.writer.save(checkpoint_number=int(self.step.numpy()))


def _verify_checkpoint(path):
    """Reads every tensor of a checkpoint once, so truncation shows up before a restore
    has half-overwritten the model (TensorFlow restores variable by variable)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


# -- progress ----------------------------------------------------------------------
class Progress:
    """A tqdm bar over all training steps with live losses in its postfix."""

    def __init__(self, total, initial, quiet=False):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, disable=quiet, unit="step", dynamic_ncols=True,
                        mininterval=0.5 if sys.stderr.isatty() else 10.0)

    def update(self, phase, values, ms_per_step=None):
        """One step of `phase` done; `ms_per_step` is the phase's step time so far (the bar's own
        rate also counts the pauses between steps: evaluation, checkpoints, re-clustering)."""
        self.bar.set_description(phase, refresh=False)
        postfix = {k: f"{float(v):.3f}" for k, v in values.items()}
        if ms_per_step is not None:
            postfix["ms/step"] = f"{ms_per_step:.0f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def write(self, text):
        self.bar.write(text)

    def close(self):
        self.bar.close()


# -- evaluation and outputs -------------------------------------------------------
def clustering_metrics(y_true, y_pred, num_clusters):
    """ACC/NMI/ARI/purity when labels are known, else only the cluster sizes."""
    from zoo import metrics

    sizes = np.bincount(y_pred, minlength=num_clusters).tolist()
    if y_true is None:
        return {"clusters": num_clusters, "cluster_sizes": sizes}
    report = metrics.clustering_report(y_true, y_pred, num_clusters)
    report["cluster_sizes"] = sizes
    return report


def format_metrics(report):
    if "acc" not in report:
        return "labels unknown, cluster sizes " + str(report["cluster_sizes"])
    text = f"ACC {report['acc']:.4f}  NMI {report['nmi']:.4f}  ARI {report['ari']:.4f}  purity {report['purity']:.4f}"
    if "test_error" in report:
        text = f"test error {100 * report['test_error']:.2f}% ({report['labels']} labels)  " + text
    if not report.get("acc_meaningful", True):
        text += f"  many-to-one ACC {report['many_to_one_acc']:.4f} (K > classes: Hungarian ACC is not meaningful)"
    return text


def write_json(path, payload):
    """Writes JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=json_default) + "\n")
    os.replace(tmp, path)


def json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
