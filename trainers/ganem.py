"""Train GAN-EM: `python -m trainers.ganem [--dataset mnist5k] [--clusters 10] ...`.

The EM schedule: every EM iteration runs `--m-steps` M-step updates (D then G, on
real data weighted by the current soft labels w) and then `--e-steps` E-net updates
on generated data; then w(x) = E(x) is recomputed for every real x, the prior pi
becomes the mean of w, and the clustering is evaluated. The first iteration starts
from uniform w (or k-means labels with `--init kmeans`).

Every optimizer update counts as one step: a run has
em_iterations * (m_steps + e_steps) steps unless `--max-steps` stops it sooner.
"""

import json
import sys
import time

import numpy as np

from trainers import common

DEFAULTS = dict(em_iterations=8, m_steps=500, e_steps=200)


def build_parser():
    parser = common.base_parser("ganem", __doc__.split("\n\n")[0].split(": ", 1)[-1] + "\n\n"
                                + __doc__.split("\n\n", 1)[1])
    group = parser.add_argument_group("GAN-EM")
    group.add_argument("--em-iterations", type=int, default=DEFAULTS["em_iterations"], help="EM iterations")
    group.add_argument("--m-steps", type=int, default=DEFAULTS["m_steps"], help="M-step (GAN) updates per EM iteration")
    group.add_argument("--e-steps", type=int, default=DEFAULTS["e_steps"], help="E-step (E-net) updates per EM iteration")
    group.add_argument("--e-batch-size", type=int, default=64, help="generated samples per E-net update")
    group.add_argument("--init", choices=["uniform", "kmeans", "gmm"], default="uniform",
                       help="soft labels of the first M-step: uniform 1/K (the paper), one-hot k-means labels "
                            "on pixels, or the posteriors of a GMM on PCA-50")
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
    group.add_argument("--fixed-prior", action="store_true", help="keep pi uniform instead of learning it")
    group.add_argument("--architecture", choices=["auto", "conv", "mlp"], default="auto",
                       help="networks: auto picks conv for square images, mlp for vectors and small images")
    group.add_argument("--lr-g", type=float, default=6e-4, help="generator learning rate (Adam, beta1 0.5)")
    group.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate")
    group.add_argument("--lr-e", type=float, default=6e-5, help="E-net learning rate")
    return parser


def validate(args, dataset):
    for flag in ("em_iterations", "m_steps", "e_steps", "e_batch_size", "latent_dim"):
        if getattr(args, flag) < 1:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if args.embedding_dim is not None and args.embedding_dim < 1:
        raise common.UsageError(f"--embedding-dim must be at least 1 (got {args.embedding_dim})")
    common.zoo_data.check_num_clusters(args.clusters, len(dataset))
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


def initial_soft_labels(args, x):
    """w of the first M-step: uniform, one-hot k-means labels, or GMM-on-PCA posteriors
    (labelled examples are then set to their one-hot labels)."""
    from zoo import baselines

    n, k = len(x), args.clusters
    if args.init == "uniform":
        return np.full((n, k), 1.0 / k, np.float32)
    if args.init == "kmeans":
        return np.eye(k, dtype=np.float32)[baselines.kmeans_pixels(x, k, args.seed)]
    return baselines.gmm_pca_posteriors(x, k, args.seed)


def main(argv=None):
    parser = build_parser()
    args = common.parse_args(parser, argv, "ganem")
    dataset = common.zoo_data.load_dataset(args.dataset, seed=args.seed, data_dir=args.data_dir)
    validate(args, dataset)

    import keras
    import tensorflow as tf

    from zoo.ganem import GANEM

    keras.utils.set_random_seed(args.seed)
    strategy = common.make_strategy(args.strategy)
    chief = common.is_chief(strategy)
    run_dir = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief and not args.resume:
        common.write_json(run_dir / "config.json", {k: v for k, v in vars(args).items() if k != "run_dir"})

    # -- model, optimizers, EM state ---------------------------------------------------
    x, y, k = dataset.x, dataset.y, args.clusters
    with strategy.scope():
        model = GANEM(
            dataset.input_shape, k, latent_dim=args.latent_dim, embedding_dim=args.embedding_dim or None,
            generator_loss=args.generator_loss, logit_clip=args.logit_clip, e_batch_size=args.e_batch_size,
            learn_prior=not args.fixed_prior, variant=args.variant, architecture=args.architecture, seed=args.seed,
        )
        model.compile(
            g_optimizer=keras.optimizers.Adam(args.lr_g, beta_1=0.5),
            d_optimizer=keras.optimizers.Adam(args.lr_d, beta_1=0.5),
            e_optimizer=keras.optimizers.Adam(args.lr_e, beta_1=0.5),
        )
    # Semi-supervised: a class-balanced labelled subset, chosen with the seed; those
    # examples keep w = onehot(y) and feed the E-step's supervised term.
    labelled = (common.zoo_data.labeled_subset(y, args.labels, dataset.num_classes, args.seed)
                if args.labels else np.zeros(0, np.int64))
    unlabelled = np.setdiff1d(np.arange(len(x)), labelled)

    def with_known_labels(w):
        w = np.array(w, np.float32)
        w[labelled] = np.eye(k, dtype=np.float32)[y[labelled]]
        return w

    if chief and not args.resume:
        from zoo import registry

        common.write_json(run_dir / "model.json", registry.describe(model))
    global_step = tf.Variable(0, dtype=tf.int64, name="global_step")
    soft_labels = tf.Variable(with_known_labels(initial_soft_labels(args, x)), name="soft_labels")
    checkpoints = common.Checkpoints(
        run_dir, global_step, model=model, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer,
        e_optimizer=model.e_optimizer, soft_labels=soft_labels,
    )
    if args.resume:
        path = checkpoints.restore_latest()
        print(f"resumed from {path} at step {int(global_step.numpy())}", file=sys.stderr)

    m_step = common.replicated_step(strategy, model.train_step)
    e_step = common.replicated_step(strategy, model.enet_train_step)
    labelled_batches = (common.distributed_batches(strategy, (x[labelled], y[labelled]),
                                                   min(args.batch_size, args.labels), args.seed)
                        if args.labels else None)
    posterior = tf.function(model.cluster_probs, reduce_retracing=True)

    per_iteration = args.m_steps + args.e_steps
    total = args.em_iterations * per_iteration
    limit = total if args.max_steps is None else min(total, args.max_steps)
    writer = tf.summary.create_file_writer(str(run_dir / "logs")) if chief else tf.summary.create_noop_writer()

    def evaluate(step):
        """Posteriors of all real data; metrics on the examples not used as labels."""
        probs = common.predict_in_batches(posterior, x)
        predictions = probs.argmax(1)
        report = common.clustering_metrics(None if y is None else y[unlabelled], predictions[unlabelled], k)
        if args.labels:
            # Labelled data pin cluster c to class c: the error needs no matching.
            report["test_error"] = float(np.mean(predictions[unlabelled] != y[unlabelled]))
            report["labels"] = args.labels
        with writer.as_default(step=step):
            for name, value in report.items():
                if isinstance(value, float):
                    tf.summary.scalar(f"eval/{name}", value)
        return probs, report

    # -- the EM loop ---------------------------------------------------------------------
    progress = common.Progress(limit, int(global_step.numpy()), quiet=args.quiet)
    timings = {"m": [], "e": []}
    iterator, iterator_of = None, None
    started = time.time()
    try:
        while int(global_step.numpy()) < limit:
            step = int(global_step.numpy())
            iteration, offset = divmod(step, per_iteration)
            tick = time.perf_counter()
            if offset < args.m_steps:
                if iterator_of != iteration:  # soft labels changed: a fresh pass over (x, w)
                    iterator = common.distributed_batches(
                        strategy, (x, soft_labels.numpy()), args.batch_size, args.seed + iteration)
                    iterator_of = iteration
                values, phase = m_step(iterator), "m"
            else:
                values, phase = e_step(labelled_batches), "e"
            values = {name: float(v) for name, v in values.items()}
            timings[phase].append(time.perf_counter() - tick)
            global_step.assign_add(1)
            step += 1
            progress.update(f"EM {iteration + 1}/{args.em_iterations} {phase.upper()}-step", values)
            if step % args.log_every == 0:
                with writer.as_default(step=step):
                    for name, value in values.items():
                        tf.summary.scalar(f"train/{name}", value)

            if offset == per_iteration - 1:
                # Between E- and M-step: new soft labels w(x) = E(x) and prior pi = mean w.
                probs, report = evaluate(step)
                soft_labels.assign(with_known_labels(probs))
                model.update_prior(soft_labels.numpy())
                report.update(em_iteration=iteration + 1, step=step, prior=model.prior.numpy().round(4).tolist(),
                              posterior_confidence=float(probs.max(1).mean()),
                              e_acc_fake=values.get("e_acc_fake"))
                if chief:  # one line per EM iteration, kept across --resume
                    with open(run_dir / "history.jsonl", "a") as f:
                        f.write(json.dumps(report, default=common.json_default) + "\n")
                progress.write(f"EM iteration {iteration + 1}/{args.em_iterations}: {common.format_metrics(report)}  "
                               f"(E-net: {report['e_acc_fake']:.2f} acc on fakes, {report['posterior_confidence']:.2f} "
                               "mean confidence on real data)")
                if chief:
                    checkpoints.save()
            elif step % args.checkpoint_every == 0 and chief:
                checkpoints.save()
    except KeyboardInterrupt:
        progress.close()
        if chief:
            checkpoints.save()
        print(f"\ninterrupted at step {int(global_step.numpy())}; continue with: "
              f"python -m trainers.ganem --resume --run-dir {run_dir}", file=sys.stderr)
        return 130
    progress.close()
    wall = time.time() - started

    # -- final evaluation, figures, export -------------------------------------------------
    step = int(global_step.numpy())
    if chief:
        checkpoints.save()
    probs, report = evaluate(step)
    predictions = probs.argmax(1)
    print(f"GAN-EM on {dataset.name}, K={k}, {step} steps: {common.format_metrics(report)}")
    if not chief:
        return 0

    from trainers import plots

    if dataset.kind == "image":
        samples = np.stack([
            model.generate(model.sample_latent(10, seed=args.seed), tf.fill([10], c)).numpy() for c in range(k)
        ])
        plots.sample_grid(samples, run_dir / "samples.png", title=f"GAN-EM samples (row = cluster), step {step}")
        with writer.as_default(step=step):
            tf.summary.image("samples", plots.grid_image(samples)[None])
    if y is not None:
        plots.confusion_png(y[unlabelled], predictions[unlabelled], k, run_dir / "confusion.png",
                            title=f"GAN-EM on {dataset.name}: ACC {report['acc']:.3f}")
    if model.embedding_dim == 2:
        embedding = common.predict_in_batches(tf.function(model.embed, reduce_retracing=True), x)
        plots.scatter_png(embedding, predictions, run_dir / "embedding_by_cluster.png",
                          title="E-net embedding (d = 2) by cluster", legend_title="cluster")
        if y is not None:
            plots.scatter_png(embedding, y, run_dir / "embedding_by_label.png",
                              title="E-net embedding (d = 2) by true label", legend_title="label")
    writer.flush()

    history_path = run_dir / "history.jsonl"
    lines = history_path.read_text().splitlines() if history_path.exists() else []
    # An iteration repeated after a kill between its log line and its checkpoint: keep the last.
    history = list({h["em_iteration"]: h for h in map(json.loads, lines)}.values())
    results = {
        **report,
        "model": "ganem",
        "dataset": dataset.name,
        "samples": len(x),
        "steps": step,
        "em_iterations_done": len(history),
        "wall_seconds": round(wall, 2),
        "ms_per_m_step": _mean_ms(timings["m"]),
        "ms_per_e_step": _mean_ms(timings["e"]),
        "replicas": strategy.num_replicas_in_sync,
        "prior": model.prior.numpy().round(4).tolist(),
        "history": history,
        "seed": args.seed,
    }
    if not args.no_export:
        from export import export_servables

        metadata = {"dataset": dataset.name, "metrics": {k_: v for k_, v in report.items() if k_ != "cluster_sizes"}}
        results["export"] = {name: str(path) for name, path in
                             export_servables(model, run_dir / "export", metadata=metadata).items()}
    common.write_json(run_dir / "metrics.json", results)
    print(f"run directory: {run_dir}")
    return 0


def _mean_ms(durations):
    """Mean step time in ms, leaving out the first steps (tracing and warm-up)."""
    steady = durations[3:] or durations
    return round(1000 * float(np.mean(steady)), 2) if steady else None


if __name__ == "__main__":
    sys.exit(common.run_main(main, "ganem"))
