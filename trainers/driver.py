"""The zoo's one training loop. A model brings a `Task`: its flags and checks, how to build
it, the schedule of its phases (which update runs at each optimizer step, on which batches),
what happens between iterations, and its final report. The loop owns the rest, the same for
every model: strategy, run directory, checkpoints and --resume, the NaN guard, progress,
timings, Ctrl-C, figures, metrics.json and export (`trainers.run.Run`).

    python -m trainers.<name>   ==   driver.train(<Task>, argv)
"""

import sys
import time

from trainers import common


class Task:
    """One model's part of a training run. The loop calls, in order:

    `build_parser()` and `validate(args, dataset)` (before TensorFlow is imported);
    `build_model(args, input_shape)` inside the strategy's scope; `prepare()`, whose dict of extra
    state is checkpointed with the model and its optimizers; `total_steps()`; `setup()` once
    the progress bar exists; then for every optimizer step `next_step(step)` -> (phase,
    description, step function, batches) and `after_step(phase, values)`; and `final()` ->
    (report, keyword arguments of `Run.finish`).
    """

    name = None  # zoo name: `python -m trainers.<name>`, zoo.registry
    title = None  # shown in the final line and on figures, e.g. "GAN-EM"

    def __init__(self, args, dataset, run):
        self.args, self.dataset, self.run = args, dataset, run
        self.model = None

    # The trainer module's functions, as static methods: build_parser() -> ArgumentParser;
    # validate(args, dataset) checks and fills in the flags (common.UsageError);
    # build_model(args, input_shape) -> the compiled model.
    build_parser = validate = build_model = None

    def prepare(self):
        """State to checkpoint besides the model and its optimizers (name -> trackable)."""
        return {}

    def total_steps(self):
        raise NotImplementedError

    def setup(self):
        """Everything the schedule needs before its first step (start clustering, batches)."""

    def next_step(self, step):
        """(phase, description for the progress bar, replicated step function, batches)."""
        raise NotImplementedError

    def after_step(self, phase, values):
        """After each step (`values`: its losses as floats): evaluation at the end of an
        iteration, a new clustering, checkpoints."""

    def final(self):
        raise NotImplementedError


def train(task_class, argv=None):
    """Runs `task_class` as `python -m trainers.<name>` does; returns the exit code."""
    from trainers.run import start

    args, dataset, run = start(argv, task_class.name, task_class.build_parser, task_class.validate)
    task = task_class(args, dataset, run)
    with run.strategy.scope():
        task.model = task.build_model(args, dataset.input_shape)
    # One optimizer per network with a learning rate: g_optimizer, d_optimizer, ...
    optimizers = {f"{key}_optimizer": getattr(task.model, f"{key}_optimizer") for key in task.model.learning_rates}
    run.track(task.model, **optimizers, **task.prepare())
    total = task.total_steps()
    limit = total if args.max_steps is None else min(total, args.max_steps)
    run.progress(limit)
    task.setup()
    try:
        while run.step < limit:
            phase, description, step_fn, batches = task.next_step(run.step)
            tick = time.perf_counter()
            values = step_fn(batches)
            values = run.step_done(phase, description, values, time.perf_counter() - tick)
            task.after_step(phase, values)
    except KeyboardInterrupt:
        return run.interrupted()
    report, extra = task.final()
    run.finish(report, task.title, **extra)
    return 0


def cli(task_class):
    """A `zoo-<name>` console command: one-line errors and exit codes, as `python -m trainers.<name>`."""
    sys.exit(common.run_main(lambda argv=None: train(task_class, argv), task_class.name))
