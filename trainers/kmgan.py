"""Train KM-GAN: `python -m trainers.kmgan [--dataset mnist5k] [--clusters 10] ...`.

K-Means on the discriminator's features replaces real labels (zoo/kmgan.py says how we
read the paper). Before training, k-means++ and a few Lloyd iterations on the
features of `--init-samples` real samples give the first centers. Every training step is
the paper's three-step alternation: adversarial updates of D and G, a joint update of both
through the center loss, and a mini-batch K-Means update of the centers; D's weights are
clipped to [-clip, clip]. Real data are clustered by their nearest center.

By default (not the paper; `--paper` or `--init none` is) the clusters of a start
clustering of the data (`--init umap`: a GMM on a UMAP embedding of PCA-50) are held fixed
for the most confident `--pseudo-labels` fraction of each cluster's members, which are then
the real data D and G train on, in place of their nearest centers; the centers start at
their class means in D's features. metrics.json also has `feature_kmeans_*`: K-Means run
afresh on D's features of all real data, the paper's claim.

`--space pixel` is the paper's reduced variant (K-Means on pixels), for the feature- versus
pixel-space comparison; `--regularizer-weight` > 0 the generalised variant. Besides the
outputs every trainer leaves, features.png shows D's features of real data (PCA to 2-D)
at several points of training, as the paper's Figure 2 does, and, on labelled data,
metrics.json carries the reference classifier's judgement of generated samples
(FD-classifier, quality, diversity, class histogram), and generated_classes.png the histogram.
"""


import dataclasses

import numpy as np

from trainers import common, driver
from trainers.config import RunConfig
from zoo.configs import KMGANConfig


@dataclasses.dataclass
class Config(KMGANConfig, RunConfig):
    """A KM-GAN run: `main(Config(...))` is `python -m trainers.kmgan` with those flags."""


def validate(args, dataset):
    if args.space == "pixel" and args.init is None:  # the paper's reduced variant, for its comparison
        args.init = "none"
    common.resolve_start(args, dataset)
    if args.space == "pixel" and args.init != "none":
        raise common.UsageError(f"--space pixel clusters by pixel K-Means; it cannot hold --init {args.init} "
                                f"clusters (use --space feature or --init none)")
    if args.labels:
        raise common.UsageError("KM-GAN is unsupervised: --labels is not supported (use trainers.ganem)")


def build_model(args, input_shape):
    """KM-GAN and its optimizers as the flags say (call inside the strategy's scope)."""
    from zoo.kmgan import KMGAN
    from zoo.optimizers import Adam

    model = KMGAN(input_shape, args.clusters, latent_dim=args.latent_dim, feature_dim=args.feature_dim,
                  space=args.space, conditional=not args.unconditional, clip=args.clip,
                  center_weight=args.center_weight, regularizer_weight=args.regularizer_weight,
                  temperature=args.temperature, center_memory=args.center_memory, margin=args.margin,
                  architecture=args.architecture, seed=args.seed)
    model.compile(g_optimizer=Adam(args.lr_g, beta_1=0.5), d_optimizer=Adam(args.lr_d, beta_1=0.5))
    return model


class KMGANTask(driver.Task):
    """KM-GAN's schedule: one phase, the three-step alternation, evaluated every --eval-every steps."""

    name, title, config_class = "kmgan", "KM-GAN", Config
    validate, build_model = staticmethod(validate), staticmethod(build_model)

    def total_steps(self):
        return self.args.iterations

    # -- initial centers --------------------------------------------------------------------
    def setup(self):
        import tensorflow as tf

        from zoo import baselines

        args, dataset, run, model = self.args, self.dataset, self.run, self.model
        # With --init, the most confident members of the start clusters are trained with their
        # cluster held fixed, and only they: the rest are clustered by D's features.
        self.initial, start, held = ({}, None, None) if args.init == "none" else run.start_clustering(
            args.init, args.pseudo_labels)
        if not args.resume:  # a resumed run has its centers from the checkpoint
            if self.initial:
                chosen = baselines.confident_subset(start, args.pseudo_labels)
                model.init_centers(dataset.take(chosen), labels=start.argmax(1)[chosen])
            else:
                sample = np.random.default_rng(args.seed).permutation(len(dataset))[: args.init_samples]
                model.init_centers(dataset.take(sample), restarts=args.init_restarts)
        self.alternation_step = run.replicated_step(model.alternation_step)
        self.features_of = tf.function(model.features, reduce_retracing=True)
        self.shown = np.random.default_rng(args.seed).permutation(len(dataset))[:2000]
        self.snapshots = []
        self.eval_every = args.eval_every or max(1, args.iterations // 8)
        self.limit = args.iterations if args.max_steps is None else min(args.iterations, args.max_steps)
        self.snapshot(f"step {run.step}")
        self.batches = held if held is not None else common.distributed_batches(
            run.strategy, (dataset.data,), args.batch_size, args.seed + run.step)

    def snapshot(self, label):
        self.snapshots.append((label, common.predict_in_batches(self.features_of, self.dataset.take(self.shown))))

    def evaluate(self):
        probs = self.run.posteriors()
        return self.run.evaluate(probs), probs.argmax(1)

    # -- the loop: one step = the three-step alternation -------------------------------------
    def next_step(self, step):
        return "train", f"step {step + 1}/{self.args.iterations}", self.alternation_step, self.batches

    def after_step(self, phase, values):
        run = self.run
        if run.step % self.eval_every == 0:
            report, _ = self.evaluate()
            report.update(step=run.step, **values)
            run.log_iteration(report, f"step {run.step}/{self.args.iterations}: {common.format_metrics(report)}  "
                                      f"(center loss {values['center_loss']:.4f})")
            if len(self.snapshots) < 4 or run.step == self.limit:
                self.snapshot(f"step {run.step}")
            run.save()

    # -- final evaluation, figures, judgement ------------------------------------------------------
    def final(self):
        from sklearn.decomposition import PCA

        from zoo import baselines, plots

        args, dataset, run, model = self.args, self.dataset, self.run, self.model
        y, k = dataset.y, args.clusters
        report, predictions = self.evaluate()
        extra = {}
        if run.chief:
            if self.snapshots[-1][0] != f"step {run.step}":
                self.snapshot(f"step {run.step}")
            snapshots = self.snapshots
            panels = snapshots if len(snapshots) <= 5 else [snapshots[0], *snapshots[-4:]]
            pca = PCA(2, random_state=0).fit(panels[-1][1])
            colours = y[self.shown] if y is not None else predictions[self.shown]
            plots.scatter_panels_png([(label, pca.transform(f)) for label, f in panels], colours,
                                     run.dir / "features.png",
                                     title=f"KM-GAN D features ({args.space} K-Means), PCA to 2-D, coloured by "
                                           + ("true label" if y is not None else "cluster"))
            if y is not None and args.score_samples:
                extra["judge"] = judge(model, dataset, args.seed, args.score_samples)
                plots.class_histogram_png(extra["judge"]["class_histogram"], run.dir / "generated_classes.png",
                                          title=f"KM-GAN generated samples by class, FD-classifier "
                                                f"{extra['judge']['fd_classifier']:.0f}")
        if y is not None:  # the paper's claim: K-Means on D's features, run afresh
            features = common.predict_in_batches(self.features_of, dataset.data)
            extra.update({f"feature_kmeans_{key}": value for key, value in common.clustering_metrics(
                y, baselines.kmeans_pixels(features, k, args.seed), k).items() if key in ("acc", "nmi", "ari")})
        if self.initial:
            extra["initial"] = self.initial
        return report, dict(predictions=predictions, space=args.space, history=run.history("step"), **extra)


def main(argv=None):
    return driver.train(KMGANTask, argv)


def cli():
    """The `zoo-kmgan` console command: one-line errors and exit codes, as `python -m trainers.kmgan`."""
    driver.cli(KMGANTask)


def judge(model, dataset, seed, count=2000):
    """The reference classifier's scores of `count` generated samples (every cluster equally often)."""
    from zoo.reference import ReferenceClassifier

    reference = ReferenceClassifier.for_dataset(dataset, seed=0)
    real = dataset.take(np.random.default_rng(seed).permutation(len(dataset))[:count])
    return reference.scores(model.balanced_samples(count, seed=seed), real)


if __name__ == "__main__":
    cli()
