"""Train GM-GAN: `python -m trainers.gmgan [--dataset mnist5k] [--clusters 10] [--supervised] ...`.

A GAN whose latent z is drawn from a mixture of K Gaussians (means at random from the
seed; `--latent dynamic` trains means and sigmas with G, `static` keeps them). Every
GAN iteration is one discriminator and one generator update on a batch of real data;
every `--enet-every` iterations the E-net, a classifier, takes one step on generated
pairs (G(z), k), k the Gaussian z came from, and after the GAN `--final-enet-steps`
more. The E-net, applied to real data, is the clustering (ACC/NMI/ARI are computed
every `--eval-every` iterations and at the end). `--supervised` makes k the class
label, with a discriminator that judges (x, k) pairs.

By default (not the paper; `--paper` or `--init none` is) a start clustering of the data
(`--init umap`: a GMM on a UMAP embedding of PCA-50) takes the place of labels: D judges
(x, start cluster) pairs, so Gaussian k draws start cluster k, and every E-net update also
learns the most confident `--pseudo-labels` fraction of each cluster's real members.

After training, on labelled data, a reference classifier trained by the project on the
dataset's labels (used only to judge, never to cluster; cached) scores generated
samples at every sampling scale s in {0.25, 0.5, 0.75, 1, 1.5, 2} (each sigma_k times
s): quality (mean top-class confidence), diversity (normalised entropy of the mean
class distribution) and FD-classifier (Frechet distance of its features; not FID).
metrics.json has them at s = 1 and as `scale_curve`; scale_curve.png plots them and
scale_samples.png shows the same noise at every s. The exported generator's `sample`
signature takes `scale`.

Every optimizer update counts as one step (a GAN iteration is one step: D and G).
"""


import numpy as np

from trainers import common, driver

# Sized for a 2-core CPU: a GAN iteration (D + G, batch 64, mnist5k) takes 0.2-0.4 s and an
# E-net update 0.1-0.2 s depending on the CPU, so 1,500 iterations, 750 interleaved and 300
# final E-net updates, the UMAP start, 11 evaluations and the scale curve take 8-14 minutes.
DEFAULTS = dict(gan_steps=1500, enet_every=2, final_enet_steps=300, latent_dim=32, mean_range=1.0, sigma=1.0,
                score_samples=2000, init="umap", pseudo_labels=0.5, recluster="none")
# The paper's unsupervised method: what --paper sets wherever a flag is not given.
PAPER = dict(init="none", pseudo_labels=0.5, recluster="none")


def build_parser():
    parser = common.base_parser("gmgan", __doc__)
    group = parser.add_argument_group("GM-GAN")
    group.add_argument("--gan-steps", type=int, default=DEFAULTS["gan_steps"],
                       help="training length in GAN iterations (each = one D and one G update)")
    group.add_argument("--latent", choices=["dynamic", "static"], default="dynamic",
                       help="dynamic: means and sigmas of the Gaussians are trained with G; static: fixed")
    group.add_argument("--supervised", action="store_true",
                       help="the Gaussian is the class label (all labels of the dataset are used); D is "
                            "conditional, and G(z) of Gaussian k draws class k")
    common.add_start_arguments(group, DEFAULTS, PAPER,
                               recluster_features="the E-net's features of the data (D's labels follow them too)")
    group.add_argument("--latent-dim", type=int, default=DEFAULTS["latent_dim"], help="dimension of z")
    group.add_argument("--mean-range", type=float, default=DEFAULTS["mean_range"],
                       help="initial means mu_k ~ U(-r, r)^d")
    group.add_argument("--sigma", type=float, default=DEFAULTS["sigma"], help="initial sigma of every Gaussian")
    common.add_learning_rate_arguments(group, "gmgan",
                                       networks=dict(g="generator and, when dynamic, the means and sigmas"),
                                       deprecated=[("--lr", "d"), ("--g-lr", "g"), ("--e-lr", "e")])
    group.add_argument("--enet-every", type=int, default=DEFAULTS["enet_every"],
                       help="one E-net update every N GAN iterations (0: none until the GAN is trained)")
    group.add_argument("--final-enet-steps", type=int, default=DEFAULTS["final_enet_steps"],
                       help="E-net updates on the final generator, after the GAN iterations")
    group.add_argument("--enet-scale", type=float, default=1.0,
                       help="sampling scale s of the generated pairs the E-net learns from")
    group.add_argument("--score-samples", type=int, default=DEFAULTS["score_samples"],
                       help="generated samples per scale for the quality/diversity/FD-classifier scores "
                            "(0: no scores)")
    group.add_argument("--eval-every", type=int, default=None,
                       help="evaluate and log a history line every N GAN iterations (None: gan_steps / 10)")
    return parser


def validate(args, dataset):
    common.fill_defaults(args, dataset, DEFAULTS, PAPER)
    if args.supervised:  # the true labels take the place of pseudo-labels
        args.init = "none"
    for flag in ("gan_steps", "latent_dim"):
        if getattr(args, flag) < 1:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    for flag in ("enet_every", "final_enet_steps", "score_samples"):
        if getattr(args, flag) < 0:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be >= 0 (got {getattr(args, flag)})")
    if args.eval_every is not None and args.eval_every < 1:
        raise common.UsageError(f"--eval-every must be positive (got {args.eval_every})")
    common.fill_learning_rates(args, "gmgan")
    for flag in ("mean_range", "sigma", "enet_scale"):
        if not getattr(args, flag) > 0:
            raise common.UsageError(f"--{flag.replace('_', '-')} must be positive (got {getattr(args, flag)})")
    if args.labels:
        raise common.UsageError("GM-GAN has no semi-supervised mode: --labels is not supported (use --supervised "
                                "for the supervised variant, or trainers.ganem)")
    if args.supervised:
        if dataset.y is None:
            raise common.UsageError(f"--supervised needs labels, and dataset {dataset.name!r} has none")
        if args.clusters != dataset.num_classes:
            raise common.UsageError(f"--supervised: --clusters must equal the number of classes "
                                    f"({dataset.num_classes}), got {args.clusters}")


def schedule(step, gan_steps, enet_every):
    """What optimizer step number `step` (0-based) is: ("gan" | "enet", GAN iterations done
    before it). GAN iterations come in blocks of `enet_every` followed by one E-net update;
    after the last block, only E-net updates."""
    block = enet_every + 1 if enet_every else None
    interleaved = gan_steps + (gan_steps // enet_every if enet_every else 0)
    if step >= interleaved:
        return "enet", gan_steps
    if block is None:
        return "gan", step
    blocks, offset = divmod(step, block)
    done = blocks * enet_every + min(offset, enet_every)
    return ("gan" if offset < enet_every else "enet"), done


def build_model(args, input_shape):
    """GM-GAN and its optimizers as the flags say (call inside the strategy's scope). A start
    clustering (--init) plays the part of labels: the supervised variant learns it."""
    from zoo.gmgan import GMGAN
    from zoo.optimizers import Adam

    model = GMGAN(input_shape, args.clusters, latent_dim=args.latent_dim, mean_range=args.mean_range,
                  sigma=args.sigma, latent=args.latent, supervised=args.supervised or args.init != "none",
                  e_batch_size=args.batch_size, architecture=args.architecture, seed=args.seed)
    adam = lambda lr: Adam(lr, beta_1=0.5)  # noqa: E731
    model.compile(g_optimizer=adam(args.lr_g), d_optimizer=adam(args.lr_d), e_optimizer=adam(args.lr_e))
    return model


class GMGANTask(driver.Task):
    """GM-GAN's schedule: GAN iterations with an E-net update every --enet-every of them,
    then the final E-net updates."""

    name, title = "gmgan", "GM-GAN"
    build_parser, validate, build_model = staticmethod(build_parser), staticmethod(validate), staticmethod(build_model)

    def total_steps(self):
        args = self.args
        return args.gan_steps + (args.gan_steps // args.enet_every if args.enet_every else 0) + args.final_enet_steps

    def setup(self):
        import tensorflow as tf

        args, run, model, x = self.args, self.run, self.model, self.dataset.data
        self.gan_step = run.replicated_step(model.gan_step)
        self.enet_step = run.replicated_step(lambda data=None: model.e_step(data, scale=args.enet_scale))
        self.embed = tf.function(model.embed, reduce_retracing=True)
        self.eval_every = args.eval_every or max(1, args.gan_steps // 10)
        self.initial, start, self.teacher = ({}, None, None) if args.init == "none" else run.start_clustering(
            args.init, args.pseudo_labels)
        if args.supervised:
            arrays = (x, self.dataset.y.astype(np.int32))
        elif self.initial:
            arrays = (x, start.argmax(1).astype(np.int32))
        else:
            arrays = (x,)
        # Reseeded by the start step, so a resumed run does not replay the same batches.
        self.batches = common.distributed_batches(run.strategy, arrays, args.batch_size, args.seed + run.step)

    def evaluate(self):
        probs = self.run.posteriors()
        report = self.run.evaluate(probs) if self.dataset.y is not None else {}
        report["cluster_sizes"] = np.bincount(probs.argmax(1), minlength=self.args.clusters).tolist()
        return report, probs.argmax(1)

    # -- GAN iterations with interleaved E-net updates, then the final E-net updates ----------
    def next_step(self, step):
        phase, done = schedule(step, self.args.gan_steps, self.args.enet_every)
        if phase == "gan":
            return phase, f"GAN {done + 1}/{self.args.gan_steps}", self.gan_step, self.batches
        return phase, f"E-net (after GAN {done}/{self.args.gan_steps})", self.enet_step, self.teacher

    def after_step(self, phase, values):
        args, run, x = self.args, self.run, self.dataset.data
        done = schedule(run.step - 1, args.gan_steps, args.enet_every)[1]
        if phase == "gan" and (done + 1) % self.eval_every == 0:
            report, _ = self.evaluate()
            report.update(gan_step=done + 1, step=run.step, **values)
            text = f"GAN iteration {done + 1}/{args.gan_steps}: {common.format_metrics(report)}"
            text += (f"  (D(real) {values['d_real']:.2f}, D(fake) {values['d_fake']:.2f}, "
                     f"sigma {values['sigma']:.3f})")
            if self.teacher is not None and args.recluster == "umap" and done + 1 < args.gan_steps:
                refined, note = run.recluster(common.predict_in_batches(self.embed, x), report)
                self.teacher = run.pseudo_labelled(refined, args.pseudo_labels)
                self.batches = common.distributed_batches(run.strategy, (x, refined.argmax(1).astype(np.int32)),
                                                          args.batch_size, args.seed + run.step)
                text += note
            run.log_iteration(report, text)
            run.save()

    # -- final evaluation, quality/diversity against the scale, figures ----------------------
    def final(self):
        from zoo import plots
        from zoo.gmgan import SCALES, balanced_samples, scale_curve

        args, dataset, run, model = self.args, self.dataset, self.run, self.model
        report, predictions = self.evaluate()
        extra = {}
        if run.chief and dataset.y is not None and args.score_samples:
            from zoo.reference import ReferenceClassifier

            reference = ReferenceClassifier.for_dataset(dataset, seed=0)
            curve = scale_curve(model, reference, dataset.x, SCALES, n=args.score_samples, seed=args.seed)
            at_one = next(point for point in curve if point["scale"] == 1.0)
            extra = dict(quality=at_one["quality"], diversity=at_one["diversity"],
                         fd_classifier=at_one["fd_classifier"], scale_curve=curve,
                         reference_held_out_accuracy=reference.held_out_accuracy)
            run.scalars("scores", {key: float(extra[key]) for key in ("quality", "diversity", "fd_classifier")})
            plots.curve_png([p["scale"] for p in curve],
                            {"quality": [p["quality"] for p in curve], "diversity": [p["diversity"] for p in curve]},
                            run.dir / "scale_curve.png", xlabel="sampling scale s (sigma_k x s)",
                            title=f"GM-GAN on {dataset.name}: reference-classifier scores")
            print("scale s:   " + "  ".join(f"{p['scale']:>6.2f}" for p in curve))
            print("quality:   " + "  ".join(f"{p['quality']:>6.3f}" for p in curve))
            print("diversity: " + "  ".join(f"{p['diversity']:>6.3f}" for p in curve))
            print("FD-clf:    " + "  ".join(f"{p['fd_classifier']:>6.2f}" for p in curve))
        if run.chief and dataset.kind == "image":
            grid = np.stack([balanced_samples(model, 2 * args.clusters, scale=s, seed=args.seed) for s in SCALES])
            plots.sample_grid(grid, run.dir / "scale_samples.png",
                              title="rows: s = " + ", ".join(f"{s:g}" for s in SCALES)
                                    + "; columns: Gaussian 0..K-1 x2")
        with run.strategy.scope():
            sigmas = model.sigmas().numpy()
        if args.supervised:
            self.title = "GM-GAN (supervised)"
        if self.initial:
            extra["initial"] = self.initial
        return report, dict(predictions=predictions, latent=args.latent, supervised=args.supervised,
                            sigma_mean=float(sigmas.mean()), sigma_min=float(sigmas.min()),
                            sigma_max=float(sigmas.max()),
                            gan_steps_done=schedule(run.step, args.gan_steps, args.enet_every)[1], **extra,
                            history=run.history("gan_step"))


def main(argv=None):
    return driver.train(GMGANTask, argv)


def cli():
    """The `zoo-gmgan` console command: one-line errors and exit codes, as `python -m trainers.gmgan`."""
    driver.cli(GMGANTask)


if __name__ == "__main__":
    cli()
