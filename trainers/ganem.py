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
(em_iterations - 1) * (m_steps + e_steps) steps unless `--max-steps` stops it sooner.
"""

import sys
import time

import numpy as np

from trainers import common

# Defaults sized for a 2-core CPU (docs/models/ganem.md has the figures). Without labels EM
# starts from UMAP + GMM, the E-step also learns from the most confident real samples and
# re-clusters the E-net's features; what lifts the clustering is the number of E-steps and
# re-clusterings, so the M-steps are short. With --labels the E-step is 4x longer: the labelled
# cross-entropy needs the updates.
DEFAULTS = dict(init="umap", lr_e=2e-4, pseudo_labels=0.5, recluster="umap")
SCHEDULES = {"unlabelled": dict(em_iterations=4, first_m_steps=1000, m_steps=200, e_steps=200),
             "labelled": dict(em_iterations=6, first_m_steps=1500, m_steps=400, e_steps=800)}
# The paper's method: what --paper sets wherever a flag is not given.
PAPER = dict(init="uniform", pseudo_labels=0.0, recluster="none", augment="none")


def build_parser():
    parser = common.base_parser("ganem", __doc__.split("\n\n")[0].split(": ", 1)[-1] + "\n\n"
                                + __doc__.split("\n\n", 1)[1])
    group = parser.add_argument_group("GAN-EM")
    def scheduled(flag, text):
        unlabelled, labelled = SCHEDULES["unlabelled"][flag], SCHEDULES["labelled"][flag]
        group.add_argument(f"--{flag.replace('_', '-')}", type=int, default=None,
                           help=f"{text} (default {unlabelled}" + (f", {labelled} with --labels)" if labelled != unlabelled
                                                                   else ")"))

    scheduled("em_iterations", "EM iterations")
    scheduled("first_m_steps", "M-step (GAN) updates in the first EM iteration")
    scheduled("m_steps", "M-step (GAN) updates in every later EM iteration")
    scheduled("e_steps", "E-step (E-net) updates per EM iteration")
    group.add_argument("--e-batch-size", type=int, default=64, help="generated samples per E-net update")
    group.add_argument("--paper", action="store_true",
                       help="the paper's method wherever a flag below is not given: --init uniform "
                            "--pseudo-labels 0 --recluster none --augment none")
    group.add_argument("--init", choices=["uniform", "kmeans", "gmm", "umap", "spread"], default=None,
                       help="soft labels of the first M-step: uniform 1/K (the paper), one-hot k-means labels "
                            "on pixels, the posteriors of a GMM on PCA-50, of a GMM on a 10-d UMAP embedding of "
                            "PCA-50 (default without labels), or label spreading from the --labels examples over "
                            "a 10-NN graph of PCA-50 features (default with labels)")
    group.add_argument("--pseudo-labels", type=float, default=None, metavar="FRACTION",
                       help="not in the paper: every E-step update also trains the E-net on real samples, the "
                            "FRACTION of each cluster's members with the most confident soft labels, labelled "
                            "with their cluster (default 0.5 without --labels, 0 with them; 0 is the paper)")
    group.add_argument("--recluster", choices=["none", "umap"], default=None,
                       help="not in the paper: after each E-step the soft labels are the posteriors of a GMM on a "
                            "UMAP embedding of the E-net's features (numbered as the E-net's clusters; the most "
                            "likely fit whose cluster sizes are no less even than the E-net's) instead of the "
                            "E-net's own posteriors (umap, the default without --labels; none is the paper)")
    group.add_argument("--generator-loss", choices=["mle", "nonsaturating"], default="mle",
                       help="mle: the paper's -1/2 exp(logit D_c); nonsaturating: -log D_c")
    group.add_argument("--logit-clip", type=float, default=10.0, help="upper clip of the logit in the MLE loss")
    group.add_argument("--latent-dim", type=int, default=62, help="size of the noise z ~ N(0, I)")
    group.add_argument("--embedding-dim", type=int, default=None,
                       help="width d of an extra E-net layer before its output, whose activations are the "
                            "exported embedding (dimensionality reduction; d = 2 also plots them); without it "
                            "the E-net trunk features are the embedding")
    group.add_argument("--variant", choices=["paper", "authors-code"], default="paper",
                       help="paper: K sigmoid heads, MLE generator loss, c ~ pi in the E-step, learned pi; "
                            "authors-code: (K+1)-way softmax D with a fake class, cross-entropy G loss, "
                            "class-balanced E-step, uniform pi")
    group.add_argument("--augment", choices=["none", "labelled", "all"], default=None,
                       help="random shifts (up to 10%% of the side) and rotations (up to 10 degrees) of the "
                            "E-net's training images, not in the paper: none; labelled (the labelled batch of "
                            "--labels); all (the generated samples too, the default with --labels on images: "
                            "docs/models/ganem.md, Results); images only")
    group.add_argument("--fixed-prior", action="store_true", help="keep pi uniform instead of learning it")
    group.add_argument("--architecture", choices=["auto", "conv", "mlp"], default="auto",
                       help="networks: auto picks conv for square images, mlp for vectors and small images")
    group.add_argument("--lr-g", type=float, default=6e-4, help="generator learning rate (Adam, beta1 0.5)")
    group.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate")
    group.add_argument("--lr-e", type=float, default=DEFAULTS["lr_e"], help="E-net learning rate")
    group.add_argument("--lr-decay", type=float, default=1.0,
                       help="every learning rate is multiplied by this after each EM iteration (the authors' "
                            "code uses 0.98 over 1,000 short iterations; 1 keeps them constant; a cosine "
                            "--lr-e-decay schedule is left alone)")
    group.add_argument("--lr-e-decay", choices=["none", "cosine"], default=None,
                       help="E-net learning rate over the run: constant (none; the default without --labels) or "
                            "cosine decay to 10%% over all E-steps (the default with --labels: the last EM "
                            "iterations then refine the E-net instead of moving it; docs/models/ganem.md, Results)")
    return parser


def validate(args, dataset):
    for flag, value in PAPER.items():
        if args.paper and getattr(args, flag) is None:
            setattr(args, flag, value)
    if args.init is None:
        # A set too large for memory cannot be fitted by a GMM on its pixels: EM starts uniform.
        args.init = "spread" if args.labels else "uniform" if dataset.streamed else DEFAULTS["init"]
    if args.pseudo_labels is None:  # a uniform start has no confident members to learn from
        args.pseudo_labels = 0.0 if args.labels or args.init == "uniform" else DEFAULTS["pseudo_labels"]
    if not 0 <= args.pseudo_labels <= 1:
        raise common.UsageError(f"--pseudo-labels must lie in [0, 1] (got {args.pseudo_labels})")
    if args.recluster is None:
        args.recluster = "none" if args.labels or dataset.streamed else DEFAULTS["recluster"]  # UMAP needs all features in memory
    for flag, value in SCHEDULES["labelled" if args.labels else "unlabelled"].items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    if args.lr_e_decay is None:
        args.lr_e_decay = "cosine" if args.labels else "none"
    for flag in ("em_iterations", "first_m_steps", "m_steps", "e_steps", "e_batch_size", "latent_dim"):
        if getattr(args, flag) < 1:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if not 0 < args.lr_decay <= 1:
        raise common.UsageError(f"--lr-decay must lie in (0, 1] (got {args.lr_decay})")
    if args.embedding_dim is not None and args.embedding_dim < 1:
        raise common.UsageError(f"--embedding-dim must be at least 1 (got {args.embedding_dim})")
    common.zoo_data.check_num_clusters(args.clusters, len(dataset))
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
    if args.batch_size > len(dataset):
        raise common.UsageError(f"--batch-size {args.batch_size} exceeds the number of samples ({len(dataset)})")


def initial_soft_labels(args, x, y=None, labelled=()):
    """w of the first M-step: uniform, one-hot k-means labels, GMM posteriors on PCA-50 or
    on its UMAP embedding, or (semi-supervised) label spreading from the labelled examples.

    With labelled examples, the k-means / GMM clusters are renumbered to the classes
    they match best on those examples (Hungarian), so that cluster c starts as class c
    (the trainer then sets labelled rows to their one-hot labels).
    """
    from zoo import baselines, metrics

    n, k = len(x), args.clusters
    if args.init == "uniform":
        return np.full((n, k), 1.0 / k, np.float32)
    if args.init == "spread":  # classes already in label order
        return baselines.label_spreading_posteriors(x, labelled, y[labelled], k, args.seed)
    w = baselines.start_posteriors(args.init, x, k, args.seed)
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
    return keras.optimizers.schedules.CosineDecay(args.lr_e, args.em_iterations * args.e_steps, alpha=0.1)


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


def main(argv=None):
    from trainers.run import start

    args, dataset, run = start(argv, "ganem", build_parser, validate)

    import tensorflow as tf

    # x as stored (uint8 images, or a DiskPixels for a set too large for memory): batches
    # become float32 in the input pipeline.
    x, y, k = dataset.data, dataset.y, args.clusters

    # -- model, optimizers, EM state ---------------------------------------------------
    with run.strategy.scope():
        model = build_model(args, dataset.input_shape)
    # Semi-supervised: a class-balanced labelled subset, chosen with the seed; those
    # examples keep w = onehot(y) and feed the E-step's supervised term.
    labelled = (common.zoo_data.labeled_subset(y, args.labels, dataset.num_classes, args.seed)
                if args.labels else np.zeros(0, np.int64))
    unlabelled = np.setdiff1d(np.arange(len(x)), labelled)

    def with_known_labels(w):
        w = np.array(w, np.float32)
        if len(labelled):  # unlabelled data (y is None) has nothing to pin
            w[labelled] = np.eye(k, dtype=np.float32)[y[labelled]]
        return w

    with run.timed("start_clustering"):
        first_soft_labels = with_known_labels(initial_soft_labels(args, x if args.init == "uniform" else dataset.x,
                                                                  y, labelled))
    soft_labels = tf.Variable(first_soft_labels, name="soft_labels")
    run.track(model, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer,
              e_optimizer=model.e_optimizer, soft_labels=soft_labels)

    m_step = run.replicated_step(model.train_step)
    e_step = run.replicated_step(model.enet_train_step)
    labelled_batches = (common.distributed_batches(run.strategy, (dataset.take(labelled), y[labelled]),
                                                   min(args.batch_size, args.labels), args.seed)
                        if args.labels else None)

    def pseudo_labelled_batches(iteration):
        """Real samples the E-step learns from as if labelled (--pseudo-labels): the labelled
        examples, and the most confident FRACTION of each cluster's members under the current
        soft labels, labelled with that cluster."""
        from zoo import baselines

        cluster = soft_labels.numpy().argmax(1)
        chosen = np.union1d(labelled, baselines.confident_subset(soft_labels.numpy(), args.pseudo_labels, labelled))
        return common.distributed_batches(run.strategy, (dataset.subset(chosen), cluster[chosen]),
                                          min(args.batch_size, len(chosen)), args.seed + iteration)

    def reclustered(probs):
        """--recluster umap: GMM posteriors on a UMAP embedding of the E-net's features,
        numbered as the E-net's own clusters (or `probs` kept), and which fit was taken."""
        from zoo import baselines

        with run.timed("recluster"):
            return baselines.reclustered(common.predict_in_batches(embed, x), probs, args.seed)

    embed = tf.function(model.embed, reduce_retracing=True)

    def evaluate(probs, log=True):
        """Metrics on the examples not used as labels."""
        report = run.evaluate(probs, unlabelled, log=log)
        if args.labels:
            # Labelled data pin cluster c to class c: the error needs no matching.
            report["test_error"] = float(np.mean(probs.argmax(1)[unlabelled] != y[unlabelled]))
            report["labels"] = args.labels
        return report

    # Where EM starts from: the metrics of the first soft labels (not the restored ones of a
    # --resume), kept in metrics.json and not logged as a point of the evaluation curve.
    initial = evaluate(first_soft_labels, log=False)
    initial["init"] = args.init
    if run.chief and dataset.y is not None:
        print(f"initial soft labels (--init {args.init}): {common.format_metrics(initial)}", flush=True)

    # -- the EM loop ---------------------------------------------------------------------
    first = args.first_m_steps + args.e_steps
    per_iteration = args.m_steps + args.e_steps
    total = first + (args.em_iterations - 1) * per_iteration

    def position(step):
        """(EM iteration, offset in it, M-steps in it) of a global step."""
        if step < first:
            return 0, step, args.first_m_steps
        iteration, offset = divmod(step - first, per_iteration)
        return iteration + 1, offset, args.m_steps

    limit = total if args.max_steps is None else min(total, args.max_steps)
    run.progress(limit)
    iterator, iterator_of = None, None
    teacher, teacher_of = labelled_batches, None
    hinted_empty = False
    try:
        while run.step < limit:
            iteration, offset, m_steps = position(run.step)
            tick = time.perf_counter()
            if offset < m_steps:
                if iterator_of != iteration:  # soft labels changed: a fresh pass over (x, w)
                    iterator = common.distributed_batches(
                        run.strategy, (x, soft_labels.numpy()), args.batch_size, args.seed + iteration)
                    iterator_of = iteration
                values, phase = m_step(iterator), "m"
            else:
                if args.pseudo_labels and teacher_of != iteration:
                    teacher, teacher_of = pseudo_labelled_batches(iteration), iteration
                values, phase = e_step(teacher), "e"
            values = run.step_done(phase, f"EM {iteration + 1}/{args.em_iterations} {phase.upper()}-step",
                                   values, time.perf_counter() - tick)

            if offset == m_steps + args.e_steps - 1:
                # Between E- and M-step: new soft labels w(x) = E(x) (or re-clustered E-net
                # features) and prior pi = mean w.
                probs = run.posteriors()
                report = evaluate(probs)
                if args.recluster == "umap":
                    w, report["recluster_fit"] = reclustered(probs)
                    report["soft_labels"] = evaluate(w, log=False)
                else:
                    w = probs
                soft_labels.assign(with_known_labels(w))
                model.update_prior(soft_labels.numpy())
                report.update(em_iteration=iteration + 1, step=run.step,
                              prior=model.prior.numpy().round(4).tolist(),
                              posterior_confidence=float(probs.max(1).mean()), e_acc_fake=values["e_acc_fake"])
                run.log_iteration(report, f"EM iteration {iteration + 1}/{args.em_iterations}: "
                                          f"{common.format_metrics(report)}  (E-net: {report['e_acc_fake']:.2f} acc "
                                          f"on fakes, {report['posterior_confidence']:.2f} mean confidence on real data)"
                                          + (f"; re-clustered: {common.format_metrics(report['soft_labels'])}"
                                             if "soft_labels" in report else ""))
                empty = k - len(np.unique(probs.argmax(1)))
                if empty and args.variant == "paper" and not hinted_empty:
                    # The paper's K sigmoid heads lose clusters when K is large (docs/models/ganem.md, Results).
                    hinted_empty = True
                    run.note(f"{empty} of {k} clusters hold no real sample; with many clusters "
                             f"--variant authors-code keeps them (its D is a (K+1)-way softmax)")
                if args.lr_decay != 1:
                    run.scale_learning_rates(args.lr_decay)
                run.save()
    except KeyboardInterrupt:
        return run.interrupted()

    # -- final evaluation, figures, export -------------------------------------------------
    history = run.history("em_iteration")
    run.finish(evaluate(run.posteriors()), "GAN-EM", subset=unlabelled, em_iterations_done=len(history),
               prior=model.prior.numpy().round(4).tolist(), initial=initial, history=history)
    return 0


def cli():
    """The `zoo-ganem` console command: one-line errors and exit codes, as `python -m trainers.ganem`."""
    sys.exit(common.run_main(main, "ganem"))


if __name__ == "__main__":
    cli()
