"""Train ClusterGAN: `python -m trainers.clustergan [--dataset mnist5k] [--clusters 10] ...`.

The WGAN-GP schedule: every generator iteration runs `--n-critic` critic updates on
batches of real data and then one joint update of the generator and the encoder on
generated data only (adversarial loss + beta_n ||z_n - E_n(G(z))||^2 +
beta_c CE(z_c, E_c(G(z)))). Every `--eval-every` generator iterations the real data
are clustered both by argmax E_c(x) and by k-means on the encoder's latent code
E(x) = (E_n(x), E_c(x)) (only E_c when beta_n = 0, as in the authors' code);
`--cluster-by` picks the one reported as acc/nmi/ari/purity, and metrics.json
carries both as argmax_* and kmeans_*.

By default (not the paper; `--paper` is: `--init none`, learning rates 1e-4) a start clustering of the
data (`--init umap`: a GMM on a UMAP embedding of PCA-50) gives pseudo-labels: every G/E
update also trains E_c on a batch of the most confident `--pseudo-labels` fraction of each
cluster's real members, so that code c comes to draw what start cluster c holds.

Every optimizer update counts as one step: a run has generator_steps x (n_critic + 1)
steps unless `--max-steps` stops it sooner. At the end, besides the outputs every
trainer leaves, interpolation.png shows G along straight lines in latent space from
one cluster's one-hot code to another's (rows = cluster pairs, z_n fixed).
"""


from trainers import common, driver

# Sized for a 2-core CPU: one generator iteration (5 critic updates + one G/E update, batch
# 64, mnist5k) takes 0.5-1.2 s depending on the CPU, so 600 iterations, the UMAP start and
# 11 evaluations take 6-14 minutes. From the start clustering, ACC on mnist5k levels off
# after 250-300 iterations. The learning rates (zoo.defaults) are twice the paper's.
DEFAULTS = dict(generator_steps=600, n_critic=5, latent_dim=30, sigma=0.1, beta_n=10.0, beta_c=10.0,
                gp_weight=10.0, init="umap", pseudo_labels=0.5, recluster="none")
# The paper's settings: what --paper sets wherever a flag is not given.
PAPER = dict(init="none", pseudo_labels=0.5, recluster="none")
PAPER_LEARNING_RATES = dict(g=1e-4, d=1e-4, e=1e-4)


def build_parser():
    parser = common.base_parser("clustergan", __doc__)
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
    common.add_learning_rate_arguments(group, "clustergan", networks=dict(d="critic", e="encoder"),
                                       paper=PAPER_LEARNING_RATES, deprecated=[("--lr", "gde")])
    common.add_start_arguments(group, DEFAULTS, PAPER, recluster_features="the encoder's code E(x) of the data")
    group.add_argument("--cluster-by", choices=["argmax", "kmeans"], default="argmax",
                       help="argmax: cluster = argmax E_c(x); kmeans: k-means on E(x). Both are always "
                            "computed; this picks the one reported as acc/nmi/ari/purity and drawn in "
                            "confusion.png (the exported E-net's `cluster` is always argmax E_c)")
    group.add_argument("--eval-every", type=int, default=None,
                       help="evaluate and log a history line every N generator iterations "
                            "(None: generator_steps / 10, i.e. about 10 lines per run)")
    return parser


def validate(args, dataset):
    common.fill_defaults(args, dataset, DEFAULTS, PAPER)
    for flag in ("generator_steps", "n_critic", "latent_dim"):
        if getattr(args, flag) < 1:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if args.eval_every is not None and args.eval_every < 1:
        raise common.UsageError(f"--eval-every must be positive (got {args.eval_every})")
    common.fill_learning_rates(args, "clustergan", PAPER_LEARNING_RATES)
    if not args.sigma > 0:
        raise common.UsageError(f"--sigma must be positive (got {args.sigma})")
    for flag in ("beta_n", "beta_c", "gp_weight"):
        if getattr(args, flag) < 0:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be >= 0 (got {getattr(args, flag)})")
    if args.labels:
        raise common.UsageError("ClusterGAN is unsupervised: --labels is not supported (use trainers.ganem)")


def build_model(args, input_shape):
    """ClusterGAN and its optimizers as the flags say (call inside the strategy's scope)."""
    from zoo.clustergan import ClusterGAN
    from zoo.optimizers import Adam

    model = ClusterGAN(
        input_shape, args.clusters, latent_dim=args.latent_dim, sigma=args.sigma, beta_n=args.beta_n,
        beta_c=args.beta_c, gp_weight=args.gp_weight, n_critic=args.n_critic, g_batch_size=args.batch_size,
        zn_loss=args.zn_loss, architecture=args.architecture, seed=args.seed,
    )
    adam = lambda rate: Adam(rate, beta_1=0.5, beta_2=0.9)  # noqa: E731
    model.compile(g_optimizer=adam(args.lr_g), d_optimizer=adam(args.lr_d), e_optimizer=adam(args.lr_e))
    return model


class ClusterGANTask(driver.Task):
    """ClusterGAN's schedule: n_critic critic updates, then one joint G/E update."""

    name, title = "clustergan", "ClusterGAN"
    build_parser, validate, build_model = staticmethod(build_parser), staticmethod(validate), staticmethod(build_model)

    def total_steps(self):
        return self.args.generator_steps * (self.args.n_critic + 1)

    def setup(self):
        import tensorflow as tf

        args, run, model = self.args, self.run, self.model
        self.critic_step = run.replicated_step(model.critic_step)
        self.generator_step = run.replicated_step(model.generator_step)
        self.embed = tf.function(model.embed, reduce_retracing=True)
        self.eval_every = args.eval_every or max(1, args.generator_steps // 10)
        # Reseeded by the start step, so a resumed run does not replay the same batches.
        self.batches = common.distributed_batches(run.strategy, (self.dataset.data,), args.batch_size,
                                                  args.seed + run.step)
        self.initial, _, self.teacher = ({}, None, None) if args.init == "none" else run.start_clustering(
            args.init, args.pseudo_labels)

    def code_of_data(self):
        """E(x) of every real sample; only E_c when beta_n = 0 (E_n is then not trained to mean anything)."""
        code = common.predict_in_batches(self.embed, self.dataset.data)
        return code[:, self.args.latent_dim:] if self.args.beta_n == 0 else code

    def evaluate(self):
        """Clusters of all real data by argmax E_c and by k-means on E(x); returns
        (report of the --cluster-by method with both methods' figures, its predictions)."""
        from zoo import baselines

        predictions = {"argmax": self.run.posteriors().argmax(1)}
        predictions["kmeans"] = baselines.kmeans_pixels(self.code_of_data(), self.args.clusters, self.args.seed)
        reports = {name: common.clustering_metrics(self.dataset.y, pred, self.args.clusters)
                   for name, pred in predictions.items()}
        report = dict(reports[self.args.cluster_by], cluster_by=self.args.cluster_by)
        for name, other in reports.items():
            report.update({f"{name}_{key}": other[key] for key in ("acc", "nmi", "ari", "purity") if key in other})
        self.run.scalars("eval", report)
        return report, predictions[self.args.cluster_by]

    # -- the WGAN-GP loop: n_critic critic updates, then one G/E update ----------------------
    def next_step(self, step):
        iteration, offset = divmod(step, self.args.n_critic + 1)
        if offset < self.args.n_critic:
            return "critic", f"iter {iteration + 1}/{self.args.generator_steps} critic", self.critic_step, self.batches
        return "generator", f"iter {iteration + 1}/{self.args.generator_steps} G+E", self.generator_step, self.teacher

    def after_step(self, phase, values):
        args, run = self.args, self.run
        iteration = (run.step - 1) // (args.n_critic + 1)
        if phase == "generator" and (iteration + 1) % self.eval_every == 0:
            report, _ = self.evaluate()
            report.update(generator_step=iteration + 1, step=run.step, **values)
            text = f"iteration {iteration + 1}/{args.generator_steps}: {common.format_metrics(report)}"
            if "argmax_acc" in report:
                text += f"  (argmax ACC {report['argmax_acc']:.4f}, k-means ACC {report['kmeans_acc']:.4f})"
            text += f"  (E-net: {values['e_acc_fake']:.2f} acc on fakes)"
            if self.teacher is not None and args.recluster == "umap" and iteration + 1 < args.generator_steps:
                refined, note = run.recluster(self.code_of_data(), report)
                self.teacher = run.pseudo_labelled(refined, args.pseudo_labels)
                text += note
            run.log_iteration(report, text)
            run.save()

    # -- final evaluation, figures ---------------------------------------------------------
    def final(self):
        import tensorflow as tf

        from trainers.run import step_ms
        from zoo import plots
        from zoo.clustergan import interpolation_grid, interpolation_pairs

        args, run = self.args, self.run
        report, predictions = self.evaluate()
        if run.chief and self.dataset.kind == "image":
            pairs = interpolation_pairs(args.clusters)
            grid = interpolation_grid(self.model, pairs, steps=10, seed=args.seed)
            title = "latent interpolation, rows: " + ", ".join(f"{a}->{b}" for a, b in pairs)
            plots.sample_grid(grid, run.dir / "interpolation.png", title=title)
            with run.writer.as_default(step=run.step):
                tf.summary.image("interpolation", plots.grid_image(grid)[None])
        timings = {phase: step_ms(t) for phase, t in run.timings.items()}
        iteration_ms = args.n_critic * timings.get("critic", 0.0) + timings.get("generator", 0.0)
        return report, dict(predictions=predictions, generator_steps_done=run.step // (args.n_critic + 1),
                            n_critic=args.n_critic, ms_per_generator_iteration=round(iteration_ms, 2),
                            history=run.history("generator_step"),
                            **({"initial": self.initial} if self.initial else {}))


def main(argv=None):
    return driver.train(ClusterGANTask, argv)


def cli():
    """The `zoo-clustergan` console command: one-line errors and exit codes, as `python -m trainers.clustergan`."""
    driver.cli(ClusterGANTask)


if __name__ == "__main__":
    cli()
