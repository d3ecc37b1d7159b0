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

Every optimizer update counts as one step: a run has iterations x (n_critic + 1)
steps unless `--max-steps` stops it sooner. At the end, besides the outputs every
trainer leaves, interpolation.png shows G along straight lines in latent space from
one cluster's one-hot code to another's (rows = cluster pairs, z_n fixed).
"""


import dataclasses

from trainers import common, driver
from trainers.config import RunConfig
from zoo.configs import ClusterGANConfig


@dataclasses.dataclass
class Config(ClusterGANConfig, RunConfig):
    """A ClusterGAN run: `main(Config(...))` is `python -m trainers.clustergan` with those flags."""


def validate(args, dataset):
    common.resolve_start(args, dataset)
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

    name, title, config_class = "clustergan", "ClusterGAN", Config
    validate, build_model = staticmethod(validate), staticmethod(build_model)

    def total_steps(self):
        return self.args.iterations * (self.args.n_critic + 1)

    def setup(self):
        import tensorflow as tf

        args, run, model = self.args, self.run, self.model
        self.critic_step = run.replicated_step(model.critic_step)
        self.generator_step = run.replicated_step(model.generator_step)
        self.embed = tf.function(model.embed, reduce_retracing=True)
        self.eval_every = args.eval_every or max(1, args.iterations // 10)
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
            return "critic", f"iter {iteration + 1}/{self.args.iterations} critic", self.critic_step, self.batches
        return "generator", f"iter {iteration + 1}/{self.args.iterations} G+E", self.generator_step, self.teacher

    def after_step(self, phase, values):
        args, run = self.args, self.run
        iteration = (run.step - 1) // (args.n_critic + 1)
        if phase == "generator" and (iteration + 1) % self.eval_every == 0:
            report, _ = self.evaluate()
            report.update(generator_step=iteration + 1, step=run.step, **values)
            text = f"iteration {iteration + 1}/{args.iterations}: {common.format_metrics(report)}"
            if "argmax_acc" in report:
                text += f"  (argmax ACC {report['argmax_acc']:.4f}, k-means ACC {report['kmeans_acc']:.4f})"
            text += f"  (E-net: {values['e_acc_fake']:.2f} acc on fakes)"
            if self.teacher is not None and args.recluster == "umap" and iteration + 1 < args.iterations:
                refined, note = run.recluster(self.code_of_data, report)
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
