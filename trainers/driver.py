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

    `build_parser()` (generated from `config_class`) and `validate(args, dataset)` (before
    TensorFlow is imported; `args` is a `config_class`);
    `build_model(args, input_shape)` inside the strategy's scope; `prepare()`, whose dict of extra
    state is checkpointed with the model and its optimizers; `total_steps()`; `setup()` once
    the progress bar exists; then for every optimizer step `next_step(step)` -> (phase,
    description, step function, batches) and `after_step(phase, values)`; and `final()` ->
    (report, keyword arguments of `Run.finish`).
    """

    name = None  # zoo name: `python -m trainers.<name>`, zoo.registry
    title = None  # shown in the final line, on figures and as --help's section, e.g. "GAN-EM"
    config_class = None  # the trainer's Config: its model's zoo.configs fields with RunConfig's

    def __init__(self, args, dataset, run):
        self.args, self.dataset, self.run = args, dataset, run
        self.model = None

    # The trainer module's functions, as static methods: validate(args, dataset) checks the
    # config against the data and fills in what depends on it (common.UsageError);
    # build_model(args, input_shape) -> the compiled model.
    validate = build_model = None

    @classmethod
    def build_parser(cls):
        """The command line of `config_class`; the trainer module's docstring is its description."""
        from trainers import config

        return config.build_parser(cls.config_class, cls.name, cls.title, sys.modules[cls.__module__].__doc__)

    @classmethod
    def parse(cls, argv):
        """The config the flags in `argv` give, range-checked but not yet validated against data."""
        from trainers import config

        return config.parse(cls.build_parser(), cls.config_class, argv)

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


def task_of(name):
    """The Task of `python -m trainers.<name>`."""
    import importlib

    module = importlib.import_module(f"trainers.{name}")
    return next(value for value in vars(module).values()
                if isinstance(value, type) and issubclass(value, Task) and value.name == name)


def train(task_class, argv=None):
    """Runs `task_class` as `python -m trainers.<name>` does, from a list of flags (None: the
    command line's) or a `task_class.config_class`; returns the exit code."""
    from trainers.run import start

    args, dataset, run = start(argv, task_class)
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
