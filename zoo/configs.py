"""Each model's hyperparameters and training schedule as one dataclass: the single source of
their defaults. The models' constructors and `compile()` take their defaults from here, and
the trainers generate their flags, help and range checks from the same fields
(`trainers.config`), so the Python API and the command line cannot disagree.

A field made with `option(...)` carries its help text, its choices, its range check and,
where the paper differs from the zoo, the paper's value. Such a field defaults to None,
meaning "the zoo's default unless --paper": `resolve_defaults` fills it in. Free of
TensorFlow, so that flags can be built and checked before it is imported.
"""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

_UNSET = object()


@dataclass(frozen=True)
class Check:
    """A range a value must lie in, with the words that say so ("must be positive")."""

    text: str
    holds: object  # value -> bool; False for NaN too

    def __call__(self, value):
        return bool(self.holds(value))


POSITIVE = Check("must be positive", lambda v: v > 0)
NON_NEGATIVE = Check("must be >= 0", lambda v: v >= 0)
AT_LEAST_1 = Check("must be at least 1", lambda v: v >= 1)
AT_LEAST_2 = Check("must be at least 2", lambda v: v >= 2)
UNIT_INTERVAL = Check("must lie in [0, 1]", lambda v: 0 <= v <= 1)
FRACTION = Check("must lie in (0, 1]", lambda v: 0 < v <= 1)
OPEN_FRACTION = Check("must lie in (0, 1)", lambda v: 0 < v < 1)


def option(default, help, *, choices=None, check=None, paper=_UNSET, metavar=None, group=None, negatable=False,
           per_run=False, default_text=None):
    """A config field. `paper`: the paper's value where it differs from the zoo's `default`;
    the field then defaults to None ("not given") until `resolve_defaults`. `default_text`
    says in --help what a None default becomes. `group`: the --help section (None: the
    model's). `negatable`: a --x/--no-x flag. `per_run`: describes this process rather than
    the experiment, so --resume never takes it from the saved config."""
    metadata = dict(help=help, choices=choices, check=check, metavar=metavar, group=group, negatable=negatable,
                    per_run=per_run, default_text=default_text)
    if paper is not _UNSET:
        metadata.update(paper=paper, default=default)
        default = None
    return dataclasses.field(default=default, metadata=metadata)


class Config:
    """What every model's config can do; subclasses are dataclasses of `option` fields."""

    # (old flag, fields it sets, value it stores or None for the flag's argument): spellings
    # still accepted for one release.
    DEPRECATED: ClassVar[tuple] = ()

    @classmethod
    def default(cls, name):
        """The zoo's default of field `name` (for a field with a paper value, not None)."""
        field = cls.__dataclass_fields__[name]
        return field.metadata.get("default", field.default)

    @classmethod
    def learning_rates(cls):
        """{"g": rate, "d": rate, ...}: the Adam learning rate of each network, by the fields lr_<network>."""
        return {name[3:]: cls.default(name) for name in cls.__dataclass_fields__
                if name.startswith("lr_") and len(name) == 4}

    @classmethod
    def paper_values(cls):
        """{field: the paper's value} of every field the paper sets differently."""
        return {f.name: f.metadata["paper"] for f in dataclasses.fields(cls) if "paper" in f.metadata}

    def resolve_paper(self):
        """Fields left None take the paper's value under `paper=True` (--paper)."""
        if getattr(self, "paper", False):
            for name, value in self.paper_values().items():
                if getattr(self, name) is None:
                    setattr(self, name, value)

    def resolve_defaults(self):
        """Fields with a paper value still None take the zoo's default."""
        for name in self.paper_values():
            if getattr(self, name) is None:
                setattr(self, name, self.default(name))

    def problems(self):
        """The first field whose value has the wrong type or lies out of its range, as
        (field, text) - e.g. ("latent_dim", "must be positive") - or None."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            kind = scalar_type(field)
            wrong_type = (isinstance(value, bool) and kind is not bool) or not isinstance(
                value, (int, float) if kind is float else kind)
            if wrong_type:
                return field.name, f"must be {_KINDS[kind]} (got {type(value).__name__} {value!r})"
            problem = _out_of_range(field, value)
            if problem:
                return field.name, problem
        return None

    @classmethod
    def check_arguments(cls, **values):
        """Raises ValueError naming the first value outside its field's choices or range: how
        the models' constructors check the arguments their config describes."""
        for name, value in values.items():
            problem = _out_of_range(cls.__dataclass_fields__[name], value)
            if problem:
                raise ValueError(f"{name} {problem}")


def _out_of_range(field, value):
    """What is wrong with `value` for `field` ("must be positive (got 0)"), or None; None is
    always allowed (not given)."""
    if value is None:
        return None
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        return f"must be one of {', '.join(map(str, choices))} (got {value})"
    check = field.metadata.get("check")
    if check is not None and not check(value):
        return f"{check.text} (got {value})"
    return None


_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}


def scalar_type(field):
    """int, float, str or bool: the type of `field`'s values, without its `| None`."""
    kind = field.type
    args = [arg for arg in getattr(kind, "__args__", ()) if arg is not type(None)]
    return args[0] if args else kind


# -- start clustering: shared by the models that learn from one ------------------------------
_INIT_HELP = ("not in the paper: a start clustering whose most confident members the model also learns from, "
              "labelled with their cluster: k-means on pixels, a GMM on PCA-50, or a GMM on a 10-d UMAP embedding "
              "of PCA-50 (none is the paper, and the default for data too big for memory)")
_PSEUDO_LABELS_HELP = ("with --init: the fraction of each start cluster's members, the most confident, used as "
                       "labelled")
START_NAMES = ("kmeans", "gmm", "umap")


def _recluster_help(features):
    return (f"not in the paper: with --init, at every evaluation the pseudo-labels are renewed from a GMM on a UMAP "
            f"embedding of {features}, numbered as the model's clusters")


# -- GAN-EM ---------------------------------------------------------------------------------
# Sized for a 2-core CPU (docs/models/ganem.md has the figures). Without labels EM starts from
# UMAP + GMM, the E-step also learns from the most confident real samples and re-clusters the
# E-net's features; what lifts the clustering is the number of E-steps and re-clusterings, so
# the M-steps are short. With --labels the E-step is 4x longer: the labelled cross-entropy
# needs the updates.
GANEM_SCHEDULES = {"unlabelled": dict(iterations=4, first_m_steps=1000, m_steps=200, e_steps=200),
                   "labelled": dict(iterations=6, first_m_steps=1500, m_steps=400, e_steps=800)}


def _scheduled(name, text):
    unlabelled, labelled = GANEM_SCHEDULES["unlabelled"][name], GANEM_SCHEDULES["labelled"][name]
    shown = f"{unlabelled}" + (f", {labelled} with --labels" if labelled != unlabelled else "")
    return option(None, text, check=POSITIVE, default_text=shown)


@dataclass
class GANEMConfig(Config):
    iterations: int | None = _scheduled("iterations", "training length in EM iterations (each = M-step updates, "
                                         "then E-step updates, then new soft labels)")
    first_m_steps: int | None = _scheduled("first_m_steps", "M-step (GAN) updates in the first EM iteration")
    m_steps: int | None = _scheduled("m_steps", "M-step (GAN) updates in every later EM iteration")
    e_steps: int | None = _scheduled("e_steps", "E-step (E-net) updates per EM iteration")
    e_batch_size: int = option(64, "generated samples per E-net update", check=POSITIVE)
    paper: bool = option(False, "the paper's method wherever a flag below is not given")
    init: str | None = option(
        "umap", "soft labels of the first M-step: uniform 1/K (the paper), one-hot k-means labels on pixels, the "
        "posteriors of a GMM on PCA-50, of a GMM on a 10-d UMAP embedding of PCA-50 (the default without labels), "
        "or label spreading from the --labels examples over a 10-NN graph of PCA-50 features (the default with "
        "labels; uniform for data too big for memory)",
        choices=("uniform", *START_NAMES, "spread"), paper="uniform")
    pseudo_labels: float | None = option(
        0.5, "not in the paper: every E-step update also trains the E-net on real samples, the FRACTION of each "
        "cluster's members with the most confident soft labels, labelled with their cluster (0 with --labels or "
        "a uniform start; 0 is the paper)", check=UNIT_INTERVAL, metavar="FRACTION", paper=0.0)
    recluster: str | None = option(
        "umap", "not in the paper: after each E-step the soft labels are the posteriors of a GMM on a UMAP "
        "embedding of the E-net's features (numbered as the E-net's clusters; the most likely fit whose cluster "
        "sizes are no less even than the E-net's) instead of the E-net's own posteriors (none with --labels or "
        "data too big for memory; none is the paper)", choices=("none", "umap"), paper="none")
    generator_loss: str = option("mle", "mle: the paper's -1/2 exp(logit D_c); nonsaturating: -log D_c",
                                 choices=("mle", "nonsaturating"))
    logit_clip: float = option(10.0, "upper clip of the logit in the MLE loss", check=POSITIVE)
    latent_dim: int = option(62, "size of the noise z ~ N(0, I)", check=POSITIVE)
    embedding_dim: int | None = option(
        None, "width d of an extra E-net layer before its output, whose activations are the exported embedding "
        "(dimensionality reduction; d = 2 also plots them); without it the E-net trunk features are the "
        "embedding", check=AT_LEAST_1)
    variant: str = option("paper", "paper: K sigmoid heads, MLE generator loss, c ~ pi in the E-step, learned pi; "
                          "authors-code: (K+1)-way softmax D with a fake class, cross-entropy G loss, "
                          "class-balanced E-step, uniform pi", choices=("paper", "authors-code"))
    augment: str | None = option(
        None, "random shifts (up to 10%% of the side) and rotations (up to 10 degrees) of the E-net's training "
        "images, not in the paper: none; labelled (the labelled batch of --labels); all (the generated samples "
        "too: docs/models/ganem.md, Results); images only", choices=("none", "labelled", "all"), paper="none",
        default_text="all on images when the E-step learns from real samples, else none")
    fixed_prior: bool = option(False, "keep pi uniform instead of learning it")
    # G and D as the authors' code (2e-4 x 3 and x 1); the E-net at D's rate (the code's: 6e-5).
    lr_g: float = option(6e-4, "learning rate of the generator (Adam)", check=POSITIVE)
    lr_d: float = option(2e-4, "learning rate of the discriminator (Adam)", check=POSITIVE)
    lr_e: float = option(2e-4, "learning rate of the E-net (Adam)", check=POSITIVE)
    lr_decay: float = option(
        1.0, "every learning rate is multiplied by this after each EM iteration (the authors' code uses 0.98 over "
        "1,000 short iterations; 1 keeps them constant; a cosine --lr-e-decay schedule is left alone)",
        check=FRACTION)
    lr_e_decay: str | None = option(
        None, "E-net learning rate over the run: constant (none) or cosine decay to 10%% over all E-steps (the "
        "last EM iterations then refine the E-net instead of moving it; docs/models/ganem.md, Results)",
        choices=("none", "cosine"), default_text="none, cosine with --labels")

    DEPRECATED: ClassVar[tuple] = (("--em-iterations", ("iterations",), None),)


# -- ClusterGAN -----------------------------------------------------------------------------
# Sized for a 2-core CPU: one generator iteration (5 critic updates + one G/E update, batch 64,
# mnist5k) takes 0.5-1.2 s depending on the CPU, so 600 iterations, the UMAP start and 11
# evaluations take 6-14 minutes. From the start clustering, ACC on mnist5k levels off after
# 250-300 iterations.
@dataclass
class ClusterGANConfig(Config):
    iterations: int = option(600, "training length in generator iterations (each = n_critic critic updates "
                             "+ one G/E update)", check=POSITIVE)
    n_critic: int = option(5, "critic updates per generator update", check=POSITIVE)
    latent_dim: int = option(30, "dim of the continuous latent z_n (the one-hot z_c adds K)", check=POSITIVE)
    sigma: float = option(0.1, "z_n ~ N(0, sigma^2 I)", check=POSITIVE)
    beta_n: float = option(10.0, "weight of ||z_n - E_n(G(z))||^2 (the paper uses 0 for Fashion-MNIST)",
                           check=NON_NEGATIVE)
    beta_c: float = option(10.0, "weight of the cross-entropy CE(z_c, E_c(G(z)))", check=NON_NEGATIVE)
    zn_loss: str = option("sum", "sum: the paper's squared norm ||z_n - E_n||^2; mean: the authors' code, averaged "
                          "over the z_n dims", choices=("sum", "mean"))
    gp_weight: float = option(10.0, "lambda of the WGAN-GP gradient penalty (one interpolation epsilon per "
                              "example)", check=NON_NEGATIVE)
    # Twice the paper's 1e-4 (--paper restores it): per step the largest lever on a CPU-sized run.
    lr_g: float | None = option(2e-4, "learning rate of the generator (Adam)", check=POSITIVE, paper=1e-4)
    lr_d: float | None = option(2e-4, "learning rate of the critic (Adam)", check=POSITIVE, paper=1e-4)
    lr_e: float | None = option(2e-4, "learning rate of the encoder (Adam)", check=POSITIVE, paper=1e-4)
    paper: bool = option(False, "the paper's settings wherever a flag is not given")
    init: str | None = option("umap", _INIT_HELP, choices=("none", *START_NAMES), paper="none")
    pseudo_labels: float | None = option(0.5, _PSEUDO_LABELS_HELP, check=FRACTION, metavar="FRACTION", paper=0.5)
    recluster: str | None = option("none", _recluster_help("the encoder's code E(x) of the data"),
                                   choices=("none", "umap"), paper="none")
    cluster_by: str = option(
        "argmax", "argmax: cluster = argmax E_c(x); kmeans: k-means on E(x). Both are always computed; this picks "
        "the one reported as acc/nmi/ari/purity and drawn in confusion.png (the exported E-net's `cluster` is "
        "always argmax E_c)", choices=("argmax", "kmeans"))
    eval_every: int | None = option(None, "evaluate and log a history line every N generator iterations",
                                    check=POSITIVE, default_text="iterations / 10, about 10 lines per run")

    DEPRECATED: ClassVar[tuple] = (("--lr", ("lr_g", "lr_d", "lr_e"), None),
                                   ("--generator-steps", ("iterations",), None))


# -- GM-GAN ---------------------------------------------------------------------------------
# Sized for a 2-core CPU: a GAN iteration (D + G, batch 64, mnist5k) takes 0.2-0.4 s and an
# E-net update 0.1-0.2 s depending on the CPU, so 1,500 iterations, 750 interleaved and 300
# final E-net updates, the UMAP start, 11 evaluations and the scale curve take 8-14 minutes.
@dataclass
class GMGANConfig(Config):
    iterations: int = option(1500, "training length in GAN iterations (each = one D and one G update)",
                             check=POSITIVE)
    latent: str = option("dynamic", "dynamic: means and sigmas of the Gaussians are trained with G; static: fixed",
                         choices=("dynamic", "static"))
    supervised: bool = option(False, "the Gaussian is the class label (all labels of the dataset are used); D is "
                              "conditional, and G(z) of Gaussian k draws class k")
    paper: bool = option(False, "the paper's settings wherever a flag is not given")
    init: str | None = option("umap", _INIT_HELP, choices=("none", *START_NAMES), paper="none")
    pseudo_labels: float | None = option(0.5, _PSEUDO_LABELS_HELP, check=FRACTION, metavar="FRACTION", paper=0.5)
    recluster: str | None = option(
        "none", _recluster_help("the E-net's features of the data (D's labels follow them too)"),
        choices=("none", "umap"), paper="none")
    latent_dim: int = option(32, "dimension of z", check=POSITIVE)
    mean_range: float = option(1.0, "initial means mu_k ~ U(-r, r)^d", check=POSITIVE)
    sigma: float = option(1.0, "initial sigma of every Gaussian", check=POSITIVE)
    # InfoGAN's MNIST rates; with G at D's rate, G collapsed each Gaussian to one image.
    lr_g: float = option(1e-3, "learning rate of the generator and, when dynamic, the means and sigmas (Adam)",
                         check=POSITIVE)
    lr_d: float = option(2e-4, "learning rate of the discriminator (Adam)", check=POSITIVE)
    lr_e: float = option(2e-4, "learning rate of the E-net (Adam)", check=POSITIVE)
    enet_every: int = option(2, "one E-net update every N GAN iterations (0: none until the GAN is trained)",
                             check=NON_NEGATIVE)
    final_enet_steps: int = option(300, "E-net updates on the final generator, after the GAN iterations",
                                   check=NON_NEGATIVE)
    enet_scale: float = option(1.0, "sampling scale s of the generated pairs the E-net learns from", check=POSITIVE)
    score_samples: int = option(2000, "generated samples per scale for the quality/diversity/FD-classifier scores "
                                "(0: no scores)", check=NON_NEGATIVE)
    eval_every: int | None = option(None, "evaluate and log a history line every N GAN iterations",
                                    check=POSITIVE, default_text="iterations / 10")

    DEPRECATED: ClassVar[tuple] = (("--lr", ("lr_d",), None), ("--g-lr", ("lr_g",), None),
                                   ("--e-lr", ("lr_e",), None), ("--gan-steps", ("iterations",), None))


# -- KM-GAN ---------------------------------------------------------------------------------
# Sized for a 2-core CPU: a step (three updates, batch 64, mnist5k conv nets) takes 0.3-0.7 s
# depending on the CPU, so 1,000 steps, the UMAP start and the evaluations take 6-13 minutes.
@dataclass
class KMGANConfig(Config):
    iterations: int = option(1000, "training length in iterations (each = D, G and center-loss updates + a "
                             "center update: one step)", check=POSITIVE)
    paper: bool = option(False, "the paper's settings wherever a flag is not given")
    init: str | None = option("umap", _INIT_HELP + "; none with --space pixel", choices=("none", *START_NAMES),
                              paper="none")
    pseudo_labels: float | None = option(0.5, _PSEUDO_LABELS_HELP, check=FRACTION, metavar="FRACTION", paper=0.5)
    latent_dim: int = option(62, "dim of G's noise", check=POSITIVE)
    feature_dim: int = option(64, "m, width of D's features", check=POSITIVE)
    space: str = option("feature", "where K-Means runs: D's features (KM-GAN) or pixels (the paper's reduced "
                        "variant)", choices=("feature", "pixel"))
    unconditional: bool = option(False, "the paper's unconditional G (a fake's class is its nearest center); the "
                                 "exported generator then ignores its cluster input")
    clip: float = option(0.05, "D weight clipping box (0: none)", check=NON_NEGATIVE)
    center_weight: float = option(1.0, "weight of the center loss in the joint D+G update", check=NON_NEGATIVE)
    regularizer_weight: float = option(0.0, "lambda of the generalised variant's intra/inter regularisers (0: "
                                       "regular KM-GAN)", check=NON_NEGATIVE)
    margin: float = option(1.0, "D pushes a fake until it is this much farther (squared) from its center than real "
                           "samples are from theirs", check=POSITIVE)
    center_memory: float = option(10.0, "cap of mini-batch K-Means' per-center counts: lower = centers follow D "
                                  "faster", check=POSITIVE)
    temperature: float = option(1.0, "of the exported probabilities softmax(-squared distance / temperature)",
                                check=POSITIVE)
    # DCGAN's.
    lr_g: float = option(2e-4, "learning rate of the generator (Adam)", check=POSITIVE)
    lr_d: float = option(2e-4, "learning rate of the discriminator (Adam)", check=POSITIVE)
    init_samples: int = option(2000, "with --init none: real samples for the k-means++ initialisation of the "
                               "centers", check=POSITIVE)
    init_restarts: int = option(5, "with --init none: k-means++ seedings at initialisation; the lowest-inertia one "
                                "is kept", check=POSITIVE)
    eval_every: int | None = option(None, "evaluate and log a history line every N steps", check=POSITIVE,
                                    default_text="iterations / 8")
    score_samples: int = option(2000, "generated samples the reference classifier scores at the end (0: no scores)",
                                check=NON_NEGATIVE)

    DEPRECATED: ClassVar[tuple] = (("--lr", ("lr_g", "lr_d"), None), ("--no-judge", ("score_samples",), 0),
                                   ("--train-steps", ("iterations",), None))
