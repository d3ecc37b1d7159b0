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


import dataclasses

import numpy as np

from trainers import common, driver
from trainers.config import RunConfig
from zoo.configs import GMGANConfig


@dataclasses.dataclass
class Config(GMGANConfig, RunConfig):
    """A GM-GAN run: `main(Config(...))` is `python -m trainers.gmgan` with those flags."""


def validate(args, dataset):
    common.resolve_start(args, dataset)
    if args.supervised:  # the true labels take the place of pseudo-labels
        args.init = "none"
    if args.labels:
        raise common.UsageError("GM-GAN has no semi-supervised mode: --labels is not supported (use --supervised "
                                "for the supervised variant, or trainers.ganem)")
    if args.supervised:
        if dataset.y is None:
            raise common.UsageError(f"--supervised needs labels, and dataset {dataset.name!r} has none")
        if args.clusters != dataset.num_classes:
            raise common.UsageError(f"--supervised: --clusters must equal the number of classes "
                                    f"({dataset.num_classes}), got {args.clusters}")


def schedule(step, iterations, enet_every):
    """What optimizer step number `step` (0-based) is: ("gan" | "enet", GAN iterations done
    before it). GAN iterations come in blocks of `enet_every` followed by one E-net update;
    after the last block, only E-net updates."""
    block = enet_every + 1 if enet_every else None
    interleaved = iterations + (iterations // enet_every if enet_every else 0)
    if step >= interleaved:
        return "enet", iterations
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

    name, title, config_class = "gmgan", "GM-GAN", Config
    validate, build_model = staticmethod(validate), staticmethod(build_model)

    def total_steps(self):
        args = self.args
        return args.iterations + (args.iterations // args.enet_every if args.enet_every else 0) + args.final_enet_steps

    def setup(self):
        import tensorflow as tf

        args, run, model, x = self.args, self.run, self.model, self.dataset.data
        self.gan_step = run.replicated_step(model.gan_step)
        self.enet_step = run.replicated_step(lambda data=None: model.e_step(data, scale=args.enet_scale))
        self.embed = tf.function(model.embed, reduce_retracing=True)
        self.eval_every = args.eval_every or max(1, args.iterations // 10)
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
        phase, done = schedule(step, self.args.iterations, self.args.enet_every)
        if phase == "gan":
            return phase, f"GAN {done + 1}/{self.args.iterations}", self.gan_step, self.batches
        return phase, f"E-net (after GAN {done}/{self.args.iterations})", self.enet_step, self.teacher

    def after_step(self, phase, values):
        args, run, x = self.args, self.run, self.dataset.data
        done = schedule(run.step - 1, args.iterations, args.enet_every)[1]
        if phase == "gan" and (done + 1) % self.eval_every == 0:
            report, _ = self.evaluate()
            report.update(gan_step=done + 1, step=run.step, **values)
            text = f"GAN iteration {done + 1}/{args.iterations}: {common.format_metrics(report)}"
            text += (f"  (D(real) {values['d_real']:.2f}, D(fake) {values['d_fake']:.2f}, "
                     f"sigma {values['sigma']:.3f})")
            if self.teacher is not None and args.recluster == "umap" and done + 1 < args.iterations:
                refined, note = run.recluster(lambda: common.predict_in_batches(self.embed, x), report)
                self.teacher = run.pseudo_labelled(refined, args.pseudo_labels)
                self.batches = common.distributed_batches(run.strategy, (x, refined.argmax(1).astype(np.int32)),
                                                          args.batch_size, args.seed + run.step)
                text += note
            run.log_iteration(report, text)
            run.save()

    # -- final evaluation, quality/diversity against the scale, figures ----------------------
    def final(self):
        from zoo import plots
        from zoo.gmgan import SCALES, scale_curve

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
            grid = np.stack([model.balanced_samples(2 * args.clusters, seed=args.seed, scale=s) for s in SCALES])
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
                            gan_steps_done=schedule(run.step, args.iterations, args.enet_every)[1], **extra,
                            history=run.history("gan_step"))


def main(argv=None):
    return driver.train(GMGANTask, argv)


def cli():
    """The `zoo-gmgan` console command: one-line errors and exit codes, as `python -m trainers.gmgan`."""
    driver.cli(GMGANTask)


if __name__ == "__main__":
    cli()
