"""A training run's configuration: `RunConfig`'s fields (data, run directory, strategy,
speed, divergence), which every trainer shares, plus its model's (`zoo.configs`). The
command line is generated from that dataclass - flags, help, defaults, range checks - and
a run's config.json is the dataclass, so `python -m trainers.<name> --flag value` and
`trainers.<name>.main(Config(flag=value))` train the same model. Each trainer's `Config`
is its model's config (`zoo.configs`) together with `RunConfig`.
"""

import argparse
import dataclasses
import sys
from dataclasses import dataclass

from zoo import configs
from zoo import data as zoo_data
from zoo.configs import AT_LEAST_2, NON_NEGATIVE, OPEN_FRACTION, POSITIVE, option

_SPEED = "speed, reproducibility and divergence"


@dataclass
class RunConfig(configs.Config):
    """The fields every trainer has; their flags are spelled the same across the zoo."""

    dataset: str = option("mnist5k", f"dataset: a built-in name ({', '.join(zoo_data.DATASETS)}), a tfds name, a "
                          ".npz file, an IDX file or a folder of images")
    labels_file: str | None = option(
        None, "true labels of the --dataset file or folder, for the metrics and --labels: an IDX file, .npy, .npz "
        "(y) or a text file with one label per line (an IDX images file's labels are found beside it by MNIST's "
        "naming; a folder of class folders is labelled by its folder names)", metavar="FILE")
    data_dir: str | None = option(None, "tensorflow-datasets data directory (tfds names only)")
    memory_budget: int = option(
        zoo_data.DEFAULT_MEMORY_BUDGET >> 20, "MiB of images to hold in memory: a larger image folder or IDX file is "
        "decoded once into the cache and read from disk batch by batch", check=NON_NEGATIVE, metavar="MIB")
    clusters: int = option(10, "number of clusters K", check=AT_LEAST_2)
    max_steps: int | None = option(
        None, "hard cap on training steps, for smoke runs; a step is one call of a phase of the model's schedule: "
        "GAN-EM one M- or E-step update, ClusterGAN one critic or G/E update, GM-GAN one GAN iteration (D and G) "
        "or E-net update, KM-GAN one three-step alternation", check=NON_NEGATIVE, per_run=True)
    batch_size: int = option(64, "global batch size (split across replicas)", check=POSITIVE)
    architecture: str = option("auto", "networks: auto picks conv for square images, mlp for vectors and small "
                               "images", choices=("auto", "conv", "mlp"))
    seed: int = option(0, "seed of weights, noise, shuffling and label choice")
    run_dir: str | None = option(None, "output directory (default: runs/MODEL-DATASET-TIME; with --resume, the "
                                 "newest such run)", per_run=True)
    strategy: str = option("auto", "tf.distribute strategy: auto = multiworker when TF_CONFIG names several "
                           "workers, else mirrored over all GPUs (one replica on a CPU)",
                           choices=("auto", "one", "mirrored", "multiworker"), per_run=True)
    labels: int = option(0, "number of labelled examples (0 = unsupervised)", check=NON_NEGATIVE)
    resume: bool = option(False, "continue the run in --run-dir from its last checkpoint (same flags unless given)",
                          per_run=True)
    checkpoint_every: int = option(500, "checkpoint every N steps (and at the end)", check=POSITIVE)
    log_every: int = option(25, "write TensorBoard scalars every N steps", check=POSITIVE)
    no_export: bool = option(False, "skip writing the SavedModels at the end", per_run=True)
    quiet: bool = option(False, "no progress bar", per_run=True)
    verbose: bool = option(False, "show TensorFlow's own log lines (hidden by default: on a healthy run they are "
                           "start-up notices, not problems)", per_run=True)
    jit: bool = option(False, "XLA-compile the training steps (jit_compile); on a CPU often slower, see benchmarks/",
                       group=_SPEED, negatable=True, per_run=True)
    mixed_precision: str = option(
        "off", "compute in bfloat16 or float16 with float32 weights (Keras mixed_* policies; float16 with dynamic "
        "loss scaling); outputs and losses stay float32. float16 is for GPUs; bfloat16 for recent GPUs and CPUs "
        "with AVX512-BF16 or AMX (elsewhere it is emulated, slower than float32, and the run says so)",
        choices=("off", "bfloat16", "float16"), group=_SPEED)
    deterministic: bool = option(False, "TensorFlow op determinism: the same seed on the same machine gives the same "
                                 "run (slower on GPU)", group=_SPEED, negatable=True)
    nan_patience: int = option(10, "a step whose loss or gradients are not finite is skipped; after this many "
                               "consecutive skipped steps the run goes back to its last checkpoint",
                               check=POSITIVE, group=_SPEED)
    nan_recoveries: int = option(3, "how often the run may go back to its last checkpoint with a lower learning "
                                 "rate before it stops with an error", check=NON_NEGATIVE, group=_SPEED)
    nan_lr_factor: float = option(0.5, "learning rates are multiplied by this at each such recovery",
                                  check=OPEN_FRACTION, group=_SPEED)


def per_run_fields(config_class):
    return {f.name for f in dataclasses.fields(config_class) if f.metadata.get("per_run")}


# -- the command line ------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None and False ones (their help text says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class DeprecatedFlag(argparse.Action):
    """An old spelling of one or more flags, accepted for one more release: its value goes to
    `targets` (their destinations), with a note naming the new spelling."""

    def __init__(self, option_strings, dest, targets, replacement, **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)
        self.targets, self.replacement = targets, replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated and goes in the next release; use {self.replacement}",
              file=sys.stderr)
        for target in self.targets:
            setattr(namespace, target, self.const if self.nargs == 0 else values)


def flag(name):
    return "--" + name.replace("_", "-")


def build_parser(config_class, model_name, title, doc):
    """The argparse parser of `config_class` (a trainer's `Config`): one flag per field, in
    RunConfig's sections and then a `title` section for the model's. `doc`, the trainer's
    module docstring, is the description (its first line without the usage). The parser's
    `actions` maps each field to its flag's action; `deprecated` holds the old spellings."""
    first, rest = doc.split("\n\n", 1)
    parser = argparse.ArgumentParser(prog=f"python -m trainers.{model_name}",
                                     description=first.split(": ", 1)[-1] + "\n\n" + rest,
                                     formatter_class=HelpFormatter)
    groups = {None: parser}
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    paper_values = config_class.paper_values()
    parser.actions = {}
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        section = meta["group"] if field.name in run_fields else meta["group"] or title
        if section not in groups:
            groups[section] = parser.add_argument_group(section)
        text = meta["help"]
        kind = configs.scalar_type(field)
        if field.name == "paper":
            shown = " ".join(f"{flag(name)} {value}" for name, value in paper_values.items())
            text = f"{text}: {shown}"
        elif field.name in paper_values:
            shown = meta["default_text"] or meta["default"]
            text += f" (default {shown}; the paper's: {paper_values[field.name]})"
        elif meta["default_text"]:
            text += f" (default {meta['default_text']})"
        if kind is bool:
            action = argparse.BooleanOptionalAction if meta["negatable"] else "store_true"
            kwargs = dict(action=action, default=field.default)
        else:
            kwargs = dict(type=kind, default=field.default, choices=meta["choices"], metavar=meta["metavar"])
        parser.actions[field.name] = groups[section].add_argument(flag(field.name), help=text, **kwargs)
    parser.deprecated = {}
    for old, targets, const in config_class.DEPRECATED:
        replacement = (f"{flag(targets[0])} {const}" if const is not None
                       else " ".join(flag(target) for target in targets))
        kind = configs.scalar_type(config_class.__dataclass_fields__[targets[0]])
        kwargs = dict(nargs=0, const=const) if const is not None else dict(type=kind)
        parser.deprecated[old] = groups[title].add_argument(old, action=DeprecatedFlag, targets=list(targets),
                                                            replacement=replacement, **kwargs)
    return parser


def check(config):
    """UsageError naming the flag of the first field out of its range or of the wrong type."""
    from trainers.common import UsageError

    problem = config.problems()
    if problem:
        name, text = problem
        raise UsageError(f"{flag(name)} {text}")


def parse(parser, config_class, argv, namespace=None):
    """`config_class` from the flags in `argv` (on top of `namespace`'s values), checked."""
    config = config_class(**vars(parser.parse_args(argv, namespace=namespace)))
    check(config)
    return config


def given_flags(parser, argv, fields):
    """The flags in `argv` (or sys.argv) that set any of `fields`, old spellings included."""
    argv = sys.argv[1:] if argv is None else argv
    options = [parser.actions[name].option_strings for name in fields if name in parser.actions]
    options += [action.option_strings for action in parser.deprecated.values() if set(action.targets) & set(fields)]
    return sorted(option for strings in options for option in strings
                  if any(a == option or a.startswith(option + "=") for a in argv))
