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

import sys
import time

import numpy as np

from trainers import common

# Sized for a 2-core CPU: a step (three updates, batch 64, mnist5k conv nets) takes 0.3-0.7 s
# depending on the CPU, so 1,000 steps, the UMAP start and the evaluations take 6-13 minutes.
DEFAULTS = dict(train_steps=1000, latent_dim=62, feature_dim=64, clip=0.05, center_weight=1.0, margin=1.0,
                center_memory=10.0, temperature=1.0, lr=2e-4, init_samples=2000, init_restarts=5, init="umap",
                pseudo_labels=0.5)
# The paper's method: what --paper sets wherever a flag is not given.
PAPER = dict(init="none", pseudo_labels=0.5)


def build_parser():
    parser = common.base_parser("kmgan", __doc__.split("\n\n")[0].split(": ", 1)[-1] + "\n\n"
                                + __doc__.split("\n\n", 1)[1])
    group = parser.add_argument_group("KM-GAN")
    group.add_argument("--train-steps", type=int, default=DEFAULTS["train_steps"],
                       help="training length in steps (each = D, G and center-loss updates + a center update)")
    common.add_start_arguments(group, DEFAULTS, PAPER)
    group.add_argument("--latent-dim", type=int, default=DEFAULTS["latent_dim"], help="dim of G's noise")
    group.add_argument("--feature-dim", type=int, default=DEFAULTS["feature_dim"], help="m, width of D's features")
    group.add_argument("--space", choices=["feature", "pixel"], default="feature",
                       help="where K-Means runs: D's features (KM-GAN) or pixels (the paper's reduced variant)")
    group.add_argument("--unconditional", action="store_true",
                       help="the paper's unconditional G (a fake's class is its nearest center); the exported "
                            "generator then ignores its cluster input")
    group.add_argument("--clip", type=float, default=DEFAULTS["clip"], help="D weight clipping box (0: none)")
    group.add_argument("--center-weight", type=float, default=DEFAULTS["center_weight"],
                       help="weight of the center loss in the joint D+G update")
    group.add_argument("--regularizer-weight", type=float, default=0.0,
                       help="lambda of the generalised variant's intra/inter regularisers (0: regular KM-GAN)")
    group.add_argument("--margin", type=float, default=DEFAULTS["margin"],
                       help="D pushes a fake until it is this much farther (squared) from its center than real "
                            "samples are from theirs")
    group.add_argument("--center-memory", type=float, default=DEFAULTS["center_memory"],
                       help="cap of mini-batch K-Means' per-center counts: lower = centers follow D faster")
    group.add_argument("--temperature", type=float, default=DEFAULTS["temperature"],
                       help="of the exported probabilities softmax(-squared distance / temperature)")
    group.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="Adam learning rate of D and G (beta1 0.5)")
    group.add_argument("--init-samples", type=int, default=DEFAULTS["init_samples"],
                       help="with --init none: real samples for the k-means++ initialisation of the centers")
    group.add_argument("--init-restarts", type=int, default=DEFAULTS["init_restarts"],
                       help="with --init none: k-means++ seedings at initialisation; the lowest-inertia one is "
                            "kept")
    group.add_argument("--eval-every", type=int, default=None,
                       help="evaluate and log a history line every N steps (None: train_steps / 8)")
    group.add_argument("--no-judge", action="store_true",
                       help="skip the reference classifier's scores of generated samples at the end")
    group.add_argument("--architecture", choices=["auto", "conv", "mlp"], default="auto",
                       help="networks: auto picks conv for square images, mlp for vectors and small images")
    return parser


def validate(args, dataset):
    if args.space == "pixel" and args.init is None:  # the paper's reduced variant, for its comparison
        args.init = "none"
    common.fill_defaults(args, dataset, DEFAULTS, PAPER)
    if args.space == "pixel" and args.init != "none":
        raise common.UsageError(f"--space pixel clusters by pixel K-Means; it cannot hold --init {args.init} "
                                f"clusters (use --space feature or --init none)")
    for flag in ("train_steps", "latent_dim", "feature_dim", "init_samples", "init_restarts"):
        if getattr(args, flag) < 1:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if args.eval_every is not None and args.eval_every < 1:
        raise common.UsageError(f"--eval-every must be positive (got {args.eval_every})")
    for flag in ("lr", "margin", "center_memory", "temperature"):
        if not getattr(args, flag) > 0:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    for flag in ("clip", "center_weight", "regularizer_weight"):
        if getattr(args, flag) < 0:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be >= 0 (got {getattr(args, flag)})")
    if args.labels:
        raise common.UsageError("KM-GAN is unsupervised: --labels is not supported (use trainers.ganem)")
    common.zoo_data.check_num_clusters(args.clusters, len(dataset))
    if args.batch_size > len(dataset):
        raise common.UsageError(f"--batch-size {args.batch_size} exceeds the number of samples ({len(dataset)})")


def build_model(args, input_shape):
    """KM-GAN and its optimizers as the flags say (call inside the strategy's scope)."""
    from zoo.kmgan import KMGAN
    from zoo.optimizers import Adam

    model = KMGAN(input_shape, args.clusters, latent_dim=args.latent_dim, feature_dim=args.feature_dim,
                  space=args.space, conditional=not args.unconditional, clip=args.clip,
                  center_weight=args.center_weight, regularizer_weight=args.regularizer_weight,
                  temperature=args.temperature, center_memory=args.center_memory, margin=args.margin,
                  architecture=args.architecture, seed=args.seed)
    adam = lambda: Adam(args.lr, beta_1=0.5)  # noqa: E731
    model.compile(g_optimizer=adam(), d_optimizer=adam())
    return model


def main(argv=None):
    from trainers.run import start

    args, dataset, run = start(argv, "kmgan", build_parser, validate)

    import tensorflow as tf
    from sklearn.decomposition import PCA

    from trainers import plots
    from zoo import baselines

    x, y, k = dataset.data, dataset.y, args.clusters  # as stored: float32 in the input pipeline

    # -- model, optimizers, initial centers ------------------------------------------------
    with run.strategy.scope():
        model = build_model(args, dataset.input_shape)
    run.track(model, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer)
    run.progress(args.train_steps if args.max_steps is None else min(args.train_steps, args.max_steps))
    # With --init, the most confident members of the start clusters are trained with their
    # cluster held fixed, and only they: the rest are clustered by D's features.
    initial, start, held = ({}, None, None) if args.init == "none" else run.start_clustering(args.init,
                                                                                             args.pseudo_labels)
    if not args.resume:  # a resumed run has its centers from the checkpoint
        if initial:
            chosen = baselines.confident_subset(start, args.pseudo_labels)
            model.init_centers(dataset.take(chosen), labels=start.argmax(1)[chosen])
        else:
            sample = np.random.default_rng(args.seed).permutation(len(x))[: args.init_samples]
            model.init_centers(dataset.take(sample), restarts=args.init_restarts)

    train_step = run.replicated_step(model.train_step)
    features_of = tf.function(model.features, reduce_retracing=True)
    shown = np.random.default_rng(args.seed).permutation(len(x))[:2000]
    snapshots = []

    def snapshot(label):
        snapshots.append((label, common.predict_in_batches(features_of, dataset.take(shown))))

    def evaluate():
        probs = run.posteriors()
        return run.evaluate(probs), probs.argmax(1)

    # -- the loop: one step = the three-step alternation -------------------------------------
    eval_every = args.eval_every or max(1, args.train_steps // 8)
    limit = args.train_steps if args.max_steps is None else min(args.train_steps, args.max_steps)
    snapshot(f"step {run.step}")
    batches = held if held is not None else common.distributed_batches(run.strategy, (x,), args.batch_size,
                                                                        args.seed + run.step)
    try:
        while run.step < limit:
            tick = time.perf_counter()
            values = train_step(batches)
            values = run.step_done("train", f"step {run.step + 1}/{args.train_steps}", values,
                                   time.perf_counter() - tick)
            if run.step % eval_every == 0:
                report, _ = evaluate()
                report.update(step=run.step, **values)
                run.log_iteration(report, f"step {run.step}/{args.train_steps}: {common.format_metrics(report)}  "
                                          f"(center loss {values['center_loss']:.4f})")
                if len(snapshots) < 4 or run.step == limit:
                    snapshot(f"step {run.step}")
                run.save()
    except KeyboardInterrupt:
        return run.interrupted()

    # -- final evaluation, figures, judgement, export ------------------------------------------
    report, predictions = evaluate()
    extra = {}
    if run.chief:
        if snapshots[-1][0] != f"step {run.step}":
            snapshot(f"step {run.step}")
        panels = snapshots if len(snapshots) <= 5 else [snapshots[0], *snapshots[-4:]]
        pca = PCA(2, random_state=0).fit(panels[-1][1])
        colours = y[shown] if y is not None else predictions[shown]
        plots.scatter_panels_png([(label, pca.transform(f)) for label, f in panels], colours,
                                 run.dir / "features.png",
                                 title=f"KM-GAN D features ({args.space} K-Means), PCA to 2-D, coloured by "
                                       + ("true label" if y is not None else "cluster"))
        if y is not None and not args.no_judge:
            extra["judge"] = judge(model, dataset, args.seed)
            plots.class_histogram_png(extra["judge"]["class_histogram"], run.dir / "generated_classes.png",
                                      title=f"KM-GAN generated samples by class, FD-classifier "
                                            f"{extra['judge']['fd_classifier']:.0f}")
    if y is not None:  # the paper's claim: K-Means on D's features, run afresh
        features = common.predict_in_batches(features_of, x)
        extra.update({f"feature_kmeans_{key}": value for key, value in common.clustering_metrics(
            y, baselines.kmeans_pixels(features, k, args.seed), k).items() if key in ("acc", "nmi", "ari")})
    if initial:
        extra["initial"] = initial
    run.finish(report, "KM-GAN", predictions=predictions, space=args.space, history=run.history("step"), **extra)
    return 0


def judge(model, dataset, seed, count=2000):
    """The reference classifier's scores of `count` generated samples (clusters drawn uniformly)."""
    import tensorflow as tf

    from zoo.reference import ReferenceClassifier

    reference = ReferenceClassifier.for_dataset(dataset, seed=0)
    clusters = tf.constant(np.arange(count) % model.num_clusters, tf.int32)
    fakes = np.concatenate([model.generate(model.sample_latent(500, seed=seed + i), clusters[i:i + 500]).numpy()
                            for i in range(0, count, 500)])
    real = dataset.take(np.random.default_rng(seed).permutation(len(dataset))[:count])
    return reference.scores(fakes, real)


def cli():
    """The `zoo-kmgan` console command: one-line errors and exit codes, as `python -m trainers.kmgan`."""
    sys.exit(common.run_main(main, "kmgan"))


if __name__ == "__main__":
    cli()
