"""Train ClusterGAN: `python -m trainers.clustergan [--dataset mnist5k] [--clusters 10] ...`.

The WGAN-GP schedule: every generator iteration runs `--n-critic` critic updates on
batches of real data and then one joint update of the generator and the encoder on
generated data only (adversarial loss + beta_n ||z_n - E_n(G(z))||^2 +
beta_c CE(z_c, E_c(G(z)))). Every `--eval-every` generator iterations the real data
are clustered both by argmax E_c(x) and by k-means on the encoder's latent code
E(x) = (E_n(x), E_c(x)) (only E_c when beta_n = 0, as in the authors' code);
`--cluster-by` picks the one reported as acc/nmi/ari/purity, and metrics.json
carries both as argmax_* and kmeans_*.

By default (not the paper; `--paper` is: `--init none --lr 1e-4`) a start clustering of the
data (`--init umap`: a GMM on a UMAP embedding of PCA-50) gives pseudo-labels: every G/E
update also trains E_c on a batch of the most confident `--pseudo-labels` fraction of each
cluster's real members, so that code c comes to draw what start cluster c holds.

Every optimizer update counts as one step: a run has generator_steps x (n_critic + 1)
steps unless `--max-steps` stops it sooner. At the end, besides the outputs every
trainer leaves, interpolation.png shows G along straight lines in latent space from
one cluster's one-hot code to another's (rows = cluster pairs, z_n fixed).
"""

import sys
import time

from trainers import common

# Sized for a 2-core CPU: one generator iteration (5 critic updates + one G/E update, batch
# 64, mnist5k) takes 0.5-1.2 s depending on the CPU, so 600 iterations, the UMAP start and
# 11 evaluations take 6-14 minutes. From the start clustering, ACC on mnist5k levels off
# after 250-300 iterations. The learning rate is twice the paper's: per step the largest
# lever on a CPU-sized run.
DEFAULTS = dict(generator_steps=600, n_critic=5, latent_dim=30, sigma=0.1, beta_n=10.0, beta_c=10.0,
                gp_weight=10.0, lr=2e-4, init="umap", pseudo_labels=0.5, recluster="none")
# The paper's settings: what --paper sets wherever a flag is not given.
PAPER = dict(lr=1e-4, init="none", pseudo_labels=0.5, recluster="none")


def build_parser():
    parser = common.base_parser("clustergan", __doc__.split("\n\n")[0].split(": ", 1)[-1] + "\n\n"
                                + __doc__.split("\n\n", 1)[1])
    group = parser.add_argument_group("ClusterGAN")
    group.add_argument("--generator-steps", type=int, default=DEFAULTS["generator_steps"],
                       help="training length in generator iterations (each = n_critic critic updates + one "
                            "G/E update)")
    group.add_argument("--n-critic", type=int, default=DEFAULTS["n_critic"],
                       help="critic updates per generator update")
    group.add_argument("--latent-dim", type=int, default=DEFAULTS["latent_dim"],
                       help="dim of the continuous latent z_n (the one-hot z_c adds K)")
    group.add_argument("--sigma", type=float, default=DEFAULTS["sigma"], help="z_n ~ N(0, sigma^2 I)")
    group.add_argument("--beta-n", type=float, default=DEFAULTS["beta_n"],
                       help="weight of ||z_n - E_n(G(z))||^2 (the paper uses 0 for Fashion-MNIST)")
    group.add_argument("--beta-c", type=float, default=DEFAULTS["beta_c"],
                       help="weight of the cross-entropy CE(z_c, E_c(G(z)))")
    group.add_argument("--zn-loss", choices=["sum", "mean"], default="sum",
                       help="sum: the paper's squared norm ||z_n - E_n||^2; mean: the authors' code, "
                            "averaged over the z_n dims")
    group.add_argument("--gp-weight", type=float, default=DEFAULTS["gp_weight"],
                       help="lambda of the WGAN-GP gradient penalty (one interpolation epsilon per example)")
    group.add_argument("--lr", type=float, default=None,
                       help=f"learning rate of G, E and the critic (Adam, beta1 0.5, beta2 0.9; default "
                            f"{DEFAULTS['lr']}, the paper's is {PAPER['lr']})")
    common.add_start_arguments(group, DEFAULTS, PAPER, recluster_features="the encoder's code E(x) of the data")
    group.add_argument("--cluster-by", choices=["argmax", "kmeans"], default="argmax",
                       help="argmax: cluster = argmax E_c(x); kmeans: k-means on E(x). Both are always "
                            "computed; this picks the one reported as acc/nmi/ari/purity and drawn in "
                            "confusion.png (the exported E-net's `cluster` is always argmax E_c)")
    group.add_argument("--eval-every", type=int, default=None,
                       help="evaluate and log a history line every N generator iterations "
                            "(None: generator_steps / 10, i.e. about 10 lines per run)")
    group.add_argument("--architecture", choices=["auto", "conv", "mlp"], default="auto",
                       help="networks: auto picks conv for square images, mlp for vectors and small images")
    return parser


def validate(args, dataset):
    common.fill_defaults(args, dataset, DEFAULTS, PAPER)
    for flag in ("generator_steps", "n_critic", "latent_dim"):
        if getattr(args, flag) < 1:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if args.eval_every is not None and args.eval_every < 1:
        raise common.UsageError(f"--eval-every must be positive (got {args.eval_every})")
    for flag in ("sigma", "lr"):
        if not getattr(args, flag) > 0:
            raise common.UsageError(f"--{flag} must be positive (got {getattr(args, flag)})")
    for flag in ("beta_n", "beta_c", "gp_weight"):
        if getattr(args, flag) < 0:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be >= 0 (got {getattr(args, flag)})")
    if args.labels:
        raise common.UsageError("ClusterGAN is unsupervised: --labels is not supported (use trainers.ganem)")
    common.zoo_data.check_num_clusters(args.clusters, len(dataset))
    if args.batch_size > len(dataset):
        raise common.UsageError(f"--batch-size {args.batch_size} exceeds the number of samples ({len(dataset)})")


def build_model(args, input_shape):
    """ClusterGAN and its optimizers as the flags say (call inside the strategy's scope)."""
    from zoo.clustergan import ClusterGAN
    from zoo.optimizers import Adam

    model = ClusterGAN(
        input_shape, args.clusters, latent_dim=args.latent_dim, sigma=args.sigma, beta_n=args.beta_n,
        beta_c=args.beta_c, gp_weight=args.gp_weight, n_critic=args.n_critic, g_batch_size=args.batch_size,
        zn_loss=args.zn_loss, architecture=args.architecture, seed=args.seed,
    )
    adam = lambda: Adam(args.lr, beta_1=0.5, beta_2=0.9)  # noqa: E731
    model.compile(g_optimizer=adam(), d_optimizer=adam(), e_optimizer=adam())
    return model


def main(argv=None):
    from trainers.run import start

    args, dataset, run = start(argv, "clustergan", build_parser, validate)

    import tensorflow as tf

    from trainers import plots
    from zoo import baselines
    from zoo.clustergan import interpolation_grid, interpolation_pairs

    x, y, k = dataset.data, dataset.y, args.clusters  # as stored: float32 in the input pipeline

    # -- model and optimizers ------------------------------------------------------------
    with run.strategy.scope():
        model = build_model(args, dataset.input_shape)
    run.track(model, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer, e_optimizer=model.e_optimizer)

    critic_step = run.replicated_step(model.train_step)
    generator_step = run.replicated_step(model.generator_train_step)
    embed = tf.function(model.embed, reduce_retracing=True)

    def code_of_data():
        """E(x) of every real sample; only E_c when beta_n = 0 (E_n is then not trained to mean anything)."""
        code = common.predict_in_batches(embed, x)
        return code[:, args.latent_dim:] if args.beta_n == 0 else code

    def evaluate():
        """Clusters of all real data by argmax E_c and by k-means on E(x); returns
        (report of the --cluster-by method with both methods' figures, its predictions)."""
        predictions = {"argmax": run.posteriors().argmax(1)}
        predictions["kmeans"] = baselines.kmeans_pixels(code_of_data(), k, args.seed)
        reports = {name: common.clustering_metrics(y, pred, k) for name, pred in predictions.items()}
        report = dict(reports[args.cluster_by], cluster_by=args.cluster_by)
        for name, other in reports.items():
            report.update({f"{name}_{key}": other[key] for key in ("acc", "nmi", "ari", "purity") if key in other})
        run.scalars("eval", report)
        return report, predictions[args.cluster_by]

    # -- the WGAN-GP loop: n_critic critic updates, then one G/E update ----------------------
    per_iteration = args.n_critic + 1
    total = args.generator_steps * per_iteration
    eval_every = args.eval_every or max(1, args.generator_steps // 10)
    limit = total if args.max_steps is None else min(total, args.max_steps)
    run.progress(limit)
    # Reseeded by the start step, so a resumed run does not replay the same batches.
    batches = common.distributed_batches(run.strategy, (x,), args.batch_size, args.seed + run.step)
    initial, start, teacher = ({}, None, None) if args.init == "none" else run.start_clustering(args.init,
                                                                                                 args.pseudo_labels)
    try:
        while run.step < limit:
            iteration, offset = divmod(run.step, per_iteration)
            tick = time.perf_counter()
            if offset < args.n_critic:
                values, phase = critic_step(batches), "critic"
                description = f"iter {iteration + 1}/{args.generator_steps} critic"
            else:
                values, phase = generator_step(teacher), "generator"
                description = f"iter {iteration + 1}/{args.generator_steps} G+E"
            values = run.step_done(phase, description, values, time.perf_counter() - tick)

            if phase == "generator" and (iteration + 1) % eval_every == 0:
                report, _ = evaluate()
                report.update(generator_step=iteration + 1, step=run.step, **values)
                text = f"iteration {iteration + 1}/{args.generator_steps}: {common.format_metrics(report)}"
                if "argmax_acc" in report:
                    text += f"  (argmax ACC {report['argmax_acc']:.4f}, k-means ACC {report['kmeans_acc']:.4f})"
                text += f"  (E-net: {values['e_acc_fake']:.2f} acc on fakes)"
                if teacher is not None and args.recluster == "umap" and iteration + 1 < args.generator_steps:
                    refined, note = run.recluster(code_of_data(), report)
                    teacher = run.pseudo_labelled(refined, args.pseudo_labels)
                    text += note
                run.log_iteration(report, text)
                run.save()
    except KeyboardInterrupt:
        return run.interrupted()

    # -- final evaluation, figures, export -------------------------------------------------
    report, predictions = evaluate()
    if run.chief and dataset.kind == "image":
        pairs = interpolation_pairs(k)
        grid = interpolation_grid(model, pairs, steps=10, seed=args.seed)
        title = "latent interpolation, rows: " + ", ".join(f"{a}->{b}" for a, b in pairs)
        plots.sample_grid(grid, run.dir / "interpolation.png", title=title)
        with run.writer.as_default(step=run.step):
            tf.summary.image("interpolation", plots.grid_image(grid)[None])
    from trainers.run import step_ms

    timings = {phase: step_ms(t) for phase, t in run.timings.items()}
    iteration_ms = args.n_critic * timings.get("critic", 0.0) + timings.get("generator", 0.0)
    run.finish(report, "ClusterGAN", predictions=predictions, generator_steps_done=run.step // per_iteration,
               n_critic=args.n_critic, ms_per_generator_iteration=round(iteration_ms, 2),
               history=run.history("generator_step"), **({"initial": initial} if initial else {}))
    return 0


def cli():
    """The `zoo-clustergan` console command: one-line errors and exit codes, as `python -m trainers.clustergan`."""
    sys.exit(common.run_main(main, "clustergan"))


if __name__ == "__main__":
    cli()
