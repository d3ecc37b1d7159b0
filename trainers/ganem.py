"""Train GAN-EM: `python -m trainers.ganem [--dataset mnist5k] [--clusters 10] ...`.

The EM schedule: every EM iteration runs `--m-steps` M-step updates (D then G, on
real data weighted by the current soft labels w) and then `--e-steps` E-net updates
on generated data; then w(x) = E(x) is recomputed for every real x, the prior pi
becomes the mean of w, and the clustering is evaluated. The first iteration starts
from the posteriors of a GMM on a UMAP embedding of PCA-50 (`--init umap`, default), of a
GMM on PCA-50 (`--init gmm`), uniform w (`--init uniform`, the paper), one-hot k-means
labels (`--init kmeans`) or, with `--labels`, label spreading from the labelled examples
(`--init spread`, the default there).
With `--labels` the E-step is four times longer (800 updates), since the labelled
cross-entropy keeps improving with more updates, the E-net learning rate decays along
a cosine over the run (`--lr-e-decay`), and on images the E-net also trains
on randomly shifted and rotated copies of its images (`--augment all`; not in the
paper, which `--augment none` is).

The first M-step is longer (`--first-m-steps`): the GAN starts from scratch there,
and an E-net trained on poor samples would throw the initial clustering away.
Every optimizer update counts as one step: a run has first_m_steps + e_steps +
(iterations - 1) * (m_steps + e_steps) steps unless `--max-steps` stops it sooner.
"""


import dataclasses

import numpy as np

from trainers import common, driver
from trainers.config import RunConfig
from zoo.configs import GANEM_SCHEDULES, GANEMConfig


@dataclasses.dataclass
class Config(GANEMConfig, RunConfig):
    """A GAN-EM run: `main(Config(...))` is `python -m trainers.ganem` with those flags."""


def validate(args, dataset):
    args.resolve_paper()
    if args.init is None and (args.labels or dataset.streamed):
        # A set too large for memory cannot be fitted by a GMM on its pixels: EM starts uniform.
        args.init = "spread" if args.labels else "uniform"
    if args.pseudo_labels is None and (args.labels or args.init == "uniform"):
        args.pseudo_labels = 0.0  # a uniform start has no confident members to learn from
    if args.recluster is None and (args.labels or dataset.streamed):
        args.recluster = "none"  # UMAP needs all features in memory
    args.resolve_defaults()
    for name, value in GANEM_SCHEDULES["labelled" if args.labels else "unlabelled"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.lr_e_decay is None:
        args.lr_e_decay = "cosine" if args.labels else "none"
    images = len(dataset.input_shape) == 3  # (height, width, channels)
    if args.augment is None:
        # Real images in the E-step (labels or pseudo-labels) are few; new poses keep the E-net general.
        # XLA has no CPU kernel for the image transform, so --jit runs without it.
        args.augment = "all" if (args.labels or args.pseudo_labels) and images and not args.jit else "none"
    if args.augment != "none" and args.jit:
        raise common.UsageError(f"--augment {args.augment} cannot be XLA-compiled (the image transform has no XLA "
                                f"kernel on a CPU); drop --jit or use --augment none")
    if args.augment != "none" and not images:
        raise common.UsageError(f"--augment {args.augment} needs image data; {dataset.name} has samples of shape "
                                f"{tuple(dataset.input_shape)} (use --augment none)")
    if args.init == "spread" and not args.labels:
        raise common.UsageError("--init spread needs labelled examples (--labels N)")
    if args.labels:
        if dataset.y is None:
            raise common.UsageError(f"--labels {args.labels}: dataset {dataset.name} has no labels")
        if args.labels >= len(dataset):
            raise common.UsageError(f"--labels {args.labels} leaves no unlabelled examples in {dataset.name} "
                                    f"({len(dataset)} samples)")
        if args.clusters != dataset.num_classes:
            raise common.UsageError(f"--labels needs --clusters equal to the number of classes "
                                    f"({dataset.num_classes}), got {args.clusters}")


def initial_soft_labels(init, x, k, seed, y=None, labelled=()):
    """w [N, k] of the first M-step (`init`): uniform, one-hot k-means labels, GMM posteriors on PCA-50 or
    on its UMAP embedding, or (semi-supervised) label spreading from the labelled examples.

    With labelled examples, the k-means / GMM clusters are renumbered to the classes
    they match best on those examples (Hungarian), so that cluster c starts as class c
    (the trainer then sets labelled rows to their one-hot labels).
    """
    from zoo import baselines, metrics

    if init == "uniform":
        return np.full((len(x), k), 1.0 / k, np.float32)
    if init == "spread":  # classes already in label order
        return baselines.label_spreading_posteriors(x, labelled, y[labelled], k, seed)
    w = baselines.start_posteriors(init, x, k, seed)
    if len(labelled):
        mapping = metrics.cluster_to_class_mapping(y[labelled], w[labelled].argmax(1))
        spare = iter(sorted(set(range(k)) - set(mapping.values())))
        order = [mapping[c] if c in mapping else next(spare) for c in range(k)]
        w = w[:, np.argsort(order)]  # column j now holds the cluster matched to class j
    return w


def e_learning_rate(args):
    """The E-net's learning rate: a constant, or a cosine decay over the run's E-steps."""
    import keras

    if args.lr_e_decay == "none":
        return args.lr_e
    return keras.optimizers.schedules.CosineDecay(args.lr_e, args.iterations * args.e_steps, alpha=0.1)


def build_model(args, input_shape):
    """GAN-EM and its optimizers as the flags say (call inside the strategy's scope)."""
    from zoo.ganem import GANEM
    from zoo.optimizers import Adam

    model = GANEM(
        input_shape, args.clusters, latent_dim=args.latent_dim, embedding_dim=args.embedding_dim,
        generator_loss=args.generator_loss, logit_clip=args.logit_clip, e_batch_size=args.e_batch_size,
        learn_prior=not args.fixed_prior, variant=args.variant, augment=args.augment,
        architecture=args.architecture, seed=args.seed,
    )
    model.compile(
        g_optimizer=Adam(args.lr_g, beta_1=0.5),
        d_optimizer=Adam(args.lr_d, beta_1=0.5),
        e_optimizer=Adam(e_learning_rate(args), beta_1=0.5),
    )
    return model


class GANEMTask(driver.Task):
    """GAN-EM's schedule: EM iterations of M-steps then E-steps; between them new soft labels."""

    name, title, config_class = "ganem", "GAN-EM", Config
    validate, build_model = staticmethod(validate), staticmethod(build_model)

    # -- EM state: the soft labels, checkpointed with the model ---------------------------
    def prepare(self):
        import tensorflow as tf

        args, dataset, run, y = self.args, self.dataset, self.run, self.dataset.y
        # Semi-supervised: a class-balanced labelled subset, chosen with the seed; those
        # examples keep w = onehot(y) and feed the E-step's supervised term.
        self.labelled = (common.zoo_data.labeled_subset(y, args.labels, dataset.num_classes, args.seed)
                         if args.labels else np.zeros(0, np.int64))
        self.unlabelled = np.setdiff1d(np.arange(len(dataset)), self.labelled)
        with run.timed("start_clustering"):
            start_data = dataset.data if args.init == "uniform" else dataset.x  # uniform needs only the count
            self.first_soft_labels = self.with_known_labels(
                initial_soft_labels(args.init, start_data, args.clusters, args.seed, y, self.labelled))
        self.soft_labels = tf.Variable(self.first_soft_labels, name="soft_labels")
        return {"soft_labels": self.soft_labels}

    def with_known_labels(self, w):
        w = np.array(w, np.float32)
        if len(self.labelled):  # unlabelled data (y is None) has nothing to pin
            w[self.labelled] = np.eye(self.args.clusters, dtype=np.float32)[self.dataset.y[self.labelled]]
        return w

    def total_steps(self):
        args = self.args
        return args.first_m_steps + args.e_steps + (args.iterations - 1) * (args.m_steps + args.e_steps)

    def setup(self):
        import tensorflow as tf

        args, dataset, run, model = self.args, self.dataset, self.run, self.model
        self.m_step = run.replicated_step(model.m_step)
        self.e_step = run.replicated_step(model.e_step)
        self.labelled_batches = (
            common.distributed_batches(run.strategy, (dataset.take(self.labelled), dataset.y[self.labelled]),
                                       min(args.batch_size, args.labels), args.seed)
            if args.labels else None)
        self.embed = tf.function(model.embed, reduce_retracing=True)
        # Where EM starts from: the metrics of the first soft labels (not the restored ones of a
        # --resume), kept in metrics.json and not logged as a point of the evaluation curve.
        self.initial = self.evaluate(self.first_soft_labels, log=False)
        self.initial["init"] = args.init
        if dataset.y is not None:
            run.write(f"initial soft labels (--init {args.init}): {common.format_metrics(self.initial)}")
        self.iterator, self.iterator_of = None, None
        self.teacher, self.teacher_of = self.labelled_batches, None
        self.hinted_empty = False

    def evaluate(self, probs, log=True):
        """Metrics on the examples not used as labels."""
        report = self.run.evaluate(probs, self.unlabelled, log=log)
        if self.args.labels:
            # Labelled data pin cluster c to class c: the error needs no matching.
            y = self.dataset.y
            report["test_error"] = float(np.mean(probs.argmax(1)[self.unlabelled] != y[self.unlabelled]))
            report["labels"] = self.args.labels
        return report

    def pseudo_labelled_batches(self, iteration):
        """Real samples the E-step learns from as if labelled (--pseudo-labels): the labelled
        examples, and the most confident FRACTION of each cluster's members under the current
        soft labels, labelled with that cluster."""
        from zoo import baselines

        w = self.soft_labels.numpy()
        cluster = w.argmax(1)
        chosen = np.union1d(self.labelled, baselines.confident_subset(w, self.args.pseudo_labels, self.labelled))
        return common.distributed_batches(self.run.strategy, (self.dataset.subset(chosen), cluster[chosen]),
                                          min(self.args.batch_size, len(chosen)), self.args.seed + iteration)

    def position(self, step):
        """(EM iteration, offset in it, M-steps in it) of a global step."""
        args = self.args
        first = args.first_m_steps + args.e_steps
        if step < first:
            return 0, step, args.first_m_steps
        iteration, offset = divmod(step - first, args.m_steps + args.e_steps)
        return iteration + 1, offset, args.m_steps

    # -- the EM loop ---------------------------------------------------------------------
    def next_step(self, step):
        args = self.args
        iteration, offset, m_steps = self.position(step)
        text = f"EM {iteration + 1}/{args.iterations}"
        if offset < m_steps:
            if self.iterator_of != iteration:  # soft labels changed: a fresh pass over (x, w)
                self.iterator = common.distributed_batches(
                    self.run.strategy, (self.dataset.data, self.soft_labels.numpy()), args.batch_size,
                    args.seed + iteration)
                self.iterator_of = iteration
            return "m", f"{text} M-step", self.m_step, self.iterator
        if args.pseudo_labels and self.teacher_of != iteration:
            self.teacher, self.teacher_of = self.pseudo_labelled_batches(iteration), iteration
        return "e", f"{text} E-step", self.e_step, self.teacher

    def after_step(self, phase, values):
        args, run, model, k = self.args, self.run, self.model, self.args.clusters
        iteration, offset, m_steps = self.position(run.step - 1)
        if offset != m_steps + args.e_steps - 1:
            return
        # Between E- and M-step: new soft labels w(x) = E(x) (or re-clustered E-net
        # features) and prior pi = mean w.
        probs = run.posteriors()
        report = self.evaluate(probs)
        if args.recluster == "umap":
            w, _ = run.recluster(lambda: common.predict_in_batches(self.embed, self.dataset.data), report, probs)
            report["soft_labels"] = self.evaluate(w, log=False)
        else:
            w = probs
        self.soft_labels.assign(self.with_known_labels(w))
        model.update_prior(self.soft_labels.numpy())
        report.update(em_iteration=iteration + 1, step=run.step, prior=model.prior.numpy().round(4).tolist(),
                      posterior_confidence=float(probs.max(1).mean()), e_acc_fake=values["e_acc_fake"])
        run.log_iteration(report, f"EM iteration {iteration + 1}/{args.iterations}: "
                                  f"{common.format_metrics(report)}  (E-net: {report['e_acc_fake']:.2f} acc "
                                  f"on fakes, {report['posterior_confidence']:.2f} mean confidence on real "
                                  f"data)"
                                  + (f"; re-clustered: {common.format_metrics(report['soft_labels'])}"
                                     if "soft_labels" in report else ""))
        empty = k - len(np.unique(probs.argmax(1)))
        if empty and args.variant == "paper" and not self.hinted_empty:
            # The paper's K sigmoid heads lose clusters when K is large (docs/models/ganem.md).
            self.hinted_empty = True
            run.note(f"{empty} of {k} clusters hold no real sample; with many clusters "
                     f"--variant authors-code keeps them (its D is a (K+1)-way softmax)")
        if args.lr_decay != 1:
            run.scale_learning_rates(args.lr_decay)
        run.save()

    # -- final evaluation ------------------------------------------------------------------
    def final(self):
        history = self.run.history("em_iteration")
        return self.evaluate(self.run.posteriors()), dict(
            subset=self.unlabelled, em_iterations_done=len(history), prior=self.model.prior.numpy().round(4).tolist(),
            initial=self.initial, history=history)


def main(argv=None):
    return driver.train(GANEMTask, argv)


def cli():
    """The `zoo-ganem` console command: one-line errors and exit codes, as `python -m trainers.ganem`."""
    driver.cli(GANEMTask)


if __name__ == "__main__":
    cli()
