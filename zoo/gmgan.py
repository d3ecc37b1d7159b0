"""GM-GAN: a GAN whose latent space is a mixture of K Gaussians.

Ben-Yosef and Weinshall, "Gaussian Mixture Generative Adversarial Networks for Diverse
Datasets, and the Unsupervised Clustering of Images".

* Latent: k ~ Categorical(1/K), z = mu_k + s * sigma_k * eps with eps ~ N(0, I).
  The means mu_k are drawn once, uniformly in [-mean_range, mean_range]^d, from the
  model's seed; sigma_k starts at `sigma`. With `latent="dynamic"` (default) mu and
  sigma are trained with the generator (the reparameterised z carries G's gradient
  back to them); `latent="static"` keeps them fixed. s is the sampling `scale`:
  1 during training, free afterwards (below 1 trades diversity for quality).
* Unsupervised (default): G(z) and an unconditional discriminator D(x), the standard
  GAN losses (D: binary cross-entropy, G: non-saturating -log D(G(z))).
* Supervised (`supervised=True`): k is the class label. D has K logits, one per class;
  D_y(x) judges "real of class y": real (x, y) against fakes of component c, judged by
  head c. G is still G(z): which Gaussian z came from is its only condition.
* Clustering (`e_step`): the E-net, a classifier E(x) -> softmax over K, learns
  which component a *generated* sample came from, on pairs (G(z), k) with every k
  equally often (as GAN-EM's E-step, which it shares `build_classifier` and the loss
  with). Applied to real data, argmax E(x) is the cluster. It never sees real data.
* Not the paper (the trainer's default start): the supervised variant trained on
  pseudo-labels, the clusters of a start clustering of the data, and an E-net that also
  learns the most confident of them. Gaussian k then draws start cluster k from the first
  steps, instead of whatever mode G finds for it.

`generate(eps, c, scale)` and `sample_latent(n, seed)` follow the zoo's surface: the
noise is the standard normal eps, the component c places it in latent space.

Defaults (d = 32, means in [-1, 1]^d, sigma = 1, G's Adam rate 1e-3, D's 2e-4) are
what kept G from ignoring eps on mnist5k: with sigma = 0.25, or with G at D's rate,
every Gaussian collapsed to a single image (G used only which Gaussian z came from),
and the sampling scale then changes nothing. In the dynamic variant G's loss also
shrinks the sigmas over training (1 -> ~0.7 in 1,200 iterations on mnist5k), which
pushes the same way; `latent="static"` keeps them.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from zoo import losses
from zoo.base import ClusterModel, replica_slice
from zoo.configs import GMGANConfig
from zoo.networks import build_classifier, build_generator
from zoo.optimizers import Adam

# sigma_k is exp(log sigma_k) floored here, so a dynamic sigma cannot collapse to 0.
SIGMA_FLOOR = 1e-3
# The sampling scales s (sigma_k x s) of the quality/diversity curve.
SCALES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@keras.saving.register_keras_serializable(package="zoo")
class GMGAN(ClusterModel):
    """GM-GAN clustering model.

    Args:
        data_shape: shape of one sample, e.g. (28, 28, 1) or (100,).
        num_clusters: K, the number of Gaussians.
        latent_dim: d, the dimension of z.
        mean_range: mu_k ~ U(-mean_range, mean_range)^d at initialisation.
        sigma: initial standard deviation of every component.
        latent: "dynamic" (mu and sigma trained with G) or "static" (fixed).
        supervised: the component is the class label; D has one head per class.
        e_batch_size: global batch of generated samples per E-net update.
        architecture, seed: see `ClusterModel`; `seed` also draws the means.
    """

    zoo_name = "gmgan"
    phases = ("gan_step", "e_step")
    learning_rates = GMGANConfig.learning_rates()
    # The exported generator's `sample` signature takes a `scale` input (export/savedmodel.py).
    samples_with_scale = True

    def __init__(
        self,
        data_shape,
        num_clusters=10,
        latent_dim=GMGANConfig.latent_dim,
        mean_range=GMGANConfig.mean_range,
        sigma=GMGANConfig.sigma,
        latent=GMGANConfig.latent,
        supervised=False,
        e_batch_size=64,
        architecture="auto",
        seed=0,
        **kwargs,
    ):
        super().__init__(data_shape, num_clusters, latent_dim, architecture, seed, **kwargs)
        GMGANConfig.check_arguments(latent_dim=latent_dim, mean_range=mean_range, sigma=sigma, latent=latent)
        if int(e_batch_size) < 1:
            raise ValueError(f"e_batch_size must be at least 1, got {e_batch_size}")
        self.mean_range = float(mean_range)
        self.sigma = float(sigma)
        self.latent = latent
        self.supervised = bool(supervised)
        self.e_batch_size = int(e_batch_size)

        # The mixture: means drawn from the seed (numpy, so they do not depend on
        # TensorFlow's global seed), one log-sigma per component.
        rng = np.random.default_rng(self.seed)
        means = rng.uniform(-self.mean_range, self.mean_range, (self.num_clusters, self.latent_dim))
        dynamic = latent == "dynamic"
        self.means = self.add_weight(shape=means.shape, initializer=keras.initializers.Constant(means),
                                     trainable=dynamic, name="means")
        self.log_sigmas = self.add_weight(shape=(self.num_clusters,),
                                          initializer=keras.initializers.Constant(math.log(self.sigma)),
                                          trainable=dynamic, name="log_sigmas")

        # G(z) has no condition input: the component is carried by where z lies.
        self.generator = build_generator(self.data_shape, self.latent_dim, 0, architecture)
        d_outputs = self.num_clusters if self.supervised else 1
        self.discriminator = build_classifier(self.data_shape, d_outputs, None, architecture, name="discriminator")
        self.enet = build_classifier(self.data_shape, self.num_clusters, None, architecture, name="enet")
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(mean_range=self.mean_range, sigma=self.sigma, latent=self.latent,
                      supervised=self.supervised, e_batch_size=self.e_batch_size)
        return config

    def compile(self, g_optimizer=None, d_optimizer=None, e_optimizer=None, **kwargs):
        """Optimizers default to Adam(beta1 0.5) at `learning_rates` (G's also moves mu and sigma)."""
        super().compile(**kwargs)
        adam = lambda rate: Adam(rate, beta_1=0.5)  # noqa: E731
        self.g_optimizer = g_optimizer or adam(self.learning_rates["g"])
        self.d_optimizer = d_optimizer or adam(self.learning_rates["d"])
        self.e_optimizer = e_optimizer or adam(self.learning_rates["e"])
        # Only self.optimizer is built by Keras; build the others here, inside the
        # strategy scope, or their slots become placeholders under tf.distribute.
        self.g_optimizer.build(self.generator_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.e_optimizer.build(self.enet.trainable_variables)

    @property
    def generator_variables(self):
        """G's weights, plus the mixture's mu and log sigma in the dynamic variant."""
        mixture = [self.means, self.log_sigmas] if self.latent == "dynamic" else []
        return self.generator.trainable_variables + mixture

    # -- the mixture ------------------------------------------------------------------
    def sigmas(self):
        """sigma_k [K]."""
        return tf.maximum(tf.exp(tf.convert_to_tensor(self.log_sigmas)), SIGMA_FLOOR)

    def latent_code(self, eps, c, scale=1.0):
        """z = mu_c + scale * sigma_c * eps: eps [N, d] standard normal, c [N] components."""
        c = tf.cast(c, tf.int32)
        mu = tf.gather(tf.convert_to_tensor(self.means), c)
        sigma = tf.gather(self.sigmas(), c)[:, None]
        return mu + tf.cast(scale, tf.float32) * sigma * tf.convert_to_tensor(eps, tf.float32)

    def _generator(self, z, training):
        return self.generator([z, tf.zeros((tf.shape(z)[0], 0))], training=training)

    # -- the common surface (cluster_probs and embed: the E-net's, from ClusterModel) ---
    def generate(self, z, c, scale=1.0):
        """G(mu_c + scale sigma_c z): z standard normal [N, d] (`sample_latent`), c [N];
        scale < 1 draws nearer the means (higher quality, lower diversity)."""
        return self._generator(self.latent_code(z, c, scale), training=False)

    # -- helpers for the steps ------------------------------------------------------
    def _fakes(self, local_batch, step, streams, training):
        """(c, G(z)) for uniform components c, this replica's slice of the global draw."""
        c = self.draw_clusters(local_batch, self.step_seed(step, streams[0]))
        eps = self.draw_noise(local_batch, self.step_seed(step, streams[1]))
        return c, self._generator(self.latent_code(eps, c), training=training)

    def _judge(self, x, c, training=True):
        """D's logit [B] for x; in the supervised variant the logit of head c."""
        logits, _ = self.discriminator(x, training=training)
        if self.supervised:
            return tf.gather(logits, tf.cast(c, tf.int32), axis=1, batch_dims=1)
        return logits[:, 0]

    # -- GAN: discriminator, then generator (with the mixture) -----------------------------
    def gan_step(self, data):
        """One D update then one G update on a batch of real data: `x` (or `(x,)`);
        supervised: `(x, y)`."""
        if self.supervised:
            x, y = data
        else:
            x = data[0] if isinstance(data, (tuple, list)) else data
            y = None
        batch = tf.shape(x)[0]
        step = tf.identity(self.d_optimizer.iterations)

        # Phase 1: discriminator. Real x (of class y) towards 1, G(z) of component c towards 0.
        c, fake = self._fakes(batch, step, streams=(0, 1), training=True)
        with tf.GradientTape() as tape:
            real_logit = self._judge(x, y)
            fake_logit = self._judge(fake, c)
            d_real, d_fake = tf.math.softplus(-real_logit), tf.math.softplus(fake_logit)
            d_loss = losses.replica_mean(d_real + d_fake)
        d_vars = self.discriminator.trainable_variables
        self.apply_updates([(self.d_optimizer, self.gradients(tape, d_loss, d_vars), d_vars)], d_loss)

        # Phase 2: generator, non-saturating -log D(G(z)). In the dynamic variant the
        # gradient also moves mu_c and sigma_c through z = mu_c + sigma_c eps.
        with tf.GradientTape() as tape:
            c, fake = self._fakes(batch, step, streams=(2, 3), training=True)
            fake_logit = self._judge(fake, c)
            g_per_example = losses.nonsaturating_generator_loss(fake_logit)
            g_loss = losses.replica_mean(g_per_example)
        g_vars = self.generator_variables
        self.apply_updates([(self.g_optimizer, self.gradients(tape, g_loss, g_vars), g_vars)], g_loss)

        # Unscaled means over this replica's batch; the trainer averages replicas.
        return {
            "d_loss": tf.reduce_mean(d_real + d_fake),
            "g_loss": tf.reduce_mean(g_per_example),
            "d_real": tf.reduce_mean(tf.sigmoid(real_logit)),
            "d_fake": tf.reduce_mean(tf.sigmoid(fake_logit)),
            "sigma": tf.reduce_mean(self.sigmas()),
        }

    # -- E-net: which Gaussian did a generated sample come from? ---------------------
    def e_step(self, data=None, scale=1.0):
        """One E-net update on class-balanced generated pairs (G(mu_k + scale sigma_k eps), k);
        with `data` = (x, y), real samples labelled with their component (pseudo-labels of a start
        clustering, not the paper), their cross-entropy is added."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = max(self.e_batch_size // replicas, 1)
        step = tf.identity(self.e_optimizer.iterations)

        # Every component equally often, in a fixed order (the loss is a mean, so order does
        # not matter; `draw_balanced_clusters` shuffles, which XLA cannot compile on a CPU).
        c = replica_slice(lambda n, _: tf.range(n, dtype=tf.int32) % self.num_clusters, batch, None)
        eps = self.draw_noise(batch, self.step_seed(step, 5))
        fake = self._generator(self.latent_code(eps, c, scale), training=False)
        return self.enet_update(fake, c, labelled=data)


# -- quality / diversity against the sampling scale ----------------------------------------
def scale_curve(model, reference, real, scales=SCALES, n=2000, seed=0):
    """For every s in `scales`: the reference classifier's quality, diversity and
    FD-classifier of n balanced samples drawn at scale s (the same noise for every s).
    Returns a list of dicts {scale, quality, diversity, fd_classifier, class_histogram}."""
    curve = []
    for s in scales:
        scores = reference.scores(model.balanced_samples(n, seed=seed, scale=s), real)
        curve.append({"scale": float(s), **{k: scores[k] for k in ("quality", "diversity", "fd_classifier",
                                                                     "class_histogram")}})
    return curve
