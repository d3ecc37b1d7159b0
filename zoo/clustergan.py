"""ClusterGAN: clustering in the latent space of a Wasserstein GAN.

Mukherjee et al., "ClusterGAN: Latent Space Clustering in Generative Adversarial
Networks".

* Latent z = (z_n, z_c): z_n ~ N(0, sigma^2 I) (sigma = 0.1, dim 30) and the one-hot
  code z_c = onehot(c) of a uniform cluster c. The generator G(z_n, z_c) takes the
  one-hot code as its condition.
* Critic D (`critic_step`): WGAN-GP, D(x) - D(G(z)) maximised with a gradient penalty
  of weight lambda = 10 at random interpolates of real and fake samples. The trainer
  runs `n_critic` (5) critic updates per generator update.
* Generator and encoder (`generator_step`): the encoder E maps a sample back to
  the latent space, E(x) = (E_n(x), E_c(x)) with E_c a softmax over K. G and E jointly
  minimise
      -D(G(z)) + beta_n ||z_n - E_n(G(z))||^2 + beta_c CE(z_c, E_c(G(z))),
  beta_n = beta_c = 10. They never see real data: E learns to invert G on fakes, and
  since G has to use the one-hot code visibly for E to recover it, the K codes
  become K modes of the data.
* Clustering: cluster(x) = argmax E_c(x) (`cluster_probs`), or k-means on E(x)
  (`embed`, done by the trainer), as in the paper.
* Not the paper (an option of `generator_step`): a batch of real samples with
  cluster labels from a start clustering (pseudo-labels) adds beta_c CE(y, E_c(x)) to the
  G/E loss. E_c then names real clusters from the first steps, and G, which must make
  code c recognisable to E_c, learns to draw cluster c; without it the K codes drift to
  whatever modes G finds first, which on digits align with the classes slowly.

Where the authors' TensorFlow code differs: it draws ONE interpolation epsilon per
batch for the gradient penalty (`epsilon = tf.random_uniform([], 0.0, 1.0)`), which is
a flaw: the penalty is then only enforced along one line per batch instead of at
independent random points between each real/fake pair. We draw one epsilon per
example, as WGAN-GP prescribes. The code also averages ||z_n - E_n||^2 over the z_n
dimensions (`zn_loss="mean"`), while the paper's loss is the squared norm
(`zn_loss="sum"`, our default); with dim z_n = 30 the two differ by a factor 30 in
the effective beta_n. Its critic scores real data low instead of high (a sign
convention only), and it adds small L2 weight decay to G and E, which we omit.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo import losses
from zoo.base import ClusterModel, replica_slice
from zoo.configs import ClusterGANConfig
from zoo.networks import build_classifier, build_generator
from zoo.optimizers import Adam


@keras.saving.register_keras_serializable(package="zoo")
class ClusterGAN(ClusterModel):
    """ClusterGAN clustering model.

    Args:
        data_shape: shape of one sample, e.g. (28, 28, 1) or (100,).
        num_clusters: K, the size of the one-hot code z_c.
        latent_dim: dim of the continuous part z_n (30 for MNIST in the paper).
        sigma: standard deviation of z_n.
        beta_n: weight of the z_n reconstruction loss ||z_n - E_n(G(z))||^2.
        beta_c: weight of the cluster-code cross-entropy CE(z_c, E_c(G(z))).
        gp_weight: lambda of the gradient penalty.
        n_critic: critic updates per generator update (used by the trainer's schedule).
        g_batch_size: global batch of generated samples per generator update.
        zn_loss: "sum" (the paper's squared norm) or "mean" (the authors' code: the
            mean over the z_n dimensions, i.e. the squared norm / latent_dim).
        architecture, seed: see `ClusterModel`.
    """

    zoo_name = "clustergan"
    phases = ("critic_step", "generator_step")
    learning_rates = ClusterGANConfig.learning_rates()

    def __init__(
        self,
        data_shape,
        num_clusters=10,
        latent_dim=ClusterGANConfig.latent_dim,
        sigma=ClusterGANConfig.sigma,
        beta_n=ClusterGANConfig.beta_n,
        beta_c=ClusterGANConfig.beta_c,
        gp_weight=ClusterGANConfig.gp_weight,
        n_critic=ClusterGANConfig.n_critic,
        g_batch_size=64,
        zn_loss=ClusterGANConfig.zn_loss,
        architecture="auto",
        seed=0,
        **kwargs,
    ):
        super().__init__(data_shape, num_clusters, latent_dim, architecture, seed, **kwargs)
        ClusterGANConfig.check_arguments(latent_dim=latent_dim, sigma=sigma, beta_n=beta_n, beta_c=beta_c,
                                         gp_weight=gp_weight, n_critic=n_critic, zn_loss=zn_loss)
        if int(g_batch_size) < 1:
            raise ValueError(f"g_batch_size must be at least 1, got {g_batch_size}")
        self.sigma = float(sigma)
        self.beta_n = float(beta_n)
        self.beta_c = float(beta_c)
        self.gp_weight = float(gp_weight)
        self.n_critic = int(n_critic)
        self.g_batch_size = int(g_batch_size)
        self.zn_loss = zn_loss

        # G(z_n, onehot(c)); critic D: one linear output, no batch norm (the trunk has
        # none, and batch norm would break the per-example gradient penalty); encoder
        # E: latent_dim linear outputs E_n followed by K logits of E_c.
        self.generator = build_generator(self.data_shape, self.latent_dim, self.num_clusters, architecture)
        self.critic = build_classifier(self.data_shape, 1, None, architecture, name="critic")
        self.encoder = build_classifier(self.data_shape, self.latent_dim + self.num_clusters, None, architecture,
                                        name="encoder")
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            sigma=self.sigma,
            beta_n=self.beta_n,
            beta_c=self.beta_c,
            gp_weight=self.gp_weight,
            n_critic=self.n_critic,
            g_batch_size=self.g_batch_size,
            zn_loss=self.zn_loss,
        )
        return config

    def compile(self, g_optimizer=None, d_optimizer=None, e_optimizer=None, **kwargs):
        """Optimizers default to the paper's Adam(beta1 0.5, beta2 0.9) at `learning_rates`."""
        super().compile(**kwargs)
        adam = lambda rate: Adam(rate, beta_1=0.5, beta_2=0.9)  # noqa: E731
        self.g_optimizer = g_optimizer or adam(self.learning_rates["g"])
        self.d_optimizer = d_optimizer or adam(self.learning_rates["d"])
        self.e_optimizer = e_optimizer or adam(self.learning_rates["e"])
        # Only self.optimizer is built by Keras; build the others here, inside the
        # strategy scope, or their slots become placeholders under tf.distribute.
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.critic.trainable_variables)
        self.e_optimizer.build(self.encoder.trainable_variables)

    # -- the common surface -------------------------------------------------------
    def encode(self, x, training=False):
        """x -> (E_n(x) [N, latent_dim], E_c logits [N, K])."""
        out, _ = self.encoder(x, training=training)
        return out[:, : self.latent_dim], out[:, self.latent_dim :]

    def cluster_probs(self, x):
        """E_c(x): softmax over the K cluster codes."""
        _, logits = self.encode(x)
        return tf.nn.softmax(logits)

    def embed(self, x):
        """E(x) = (E_n(x), E_c(x)) [N, latent_dim + K], E_c as probabilities: the
        inverse-mapped latent code that the paper (and its code) clusters with k-means."""
        zn, logits = self.encode(x)
        return tf.concat([zn, tf.nn.softmax(logits)], axis=-1)

    def generate(self, z, c):
        """z: z_n [N, latent_dim] (e.g. from `sample_latent`, so sigma is already in it)."""
        return self.generate_from_code(z, tf.one_hot(c, self.num_clusters))

    def generate_from_code(self, z, code):
        """G(z_n, z_c) for any code z_c [N, K], one-hot or a blend of one-hots."""
        z = tf.convert_to_tensor(z, tf.float32)
        return self.generator([z, tf.cast(code, tf.float32)], training=False)

    def sample_latent(self, n, seed=0):
        """z_n ~ N(0, sigma^2 I) [n, latent_dim], reproducible by `seed` (a tensor is fine)."""
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return self.sigma * tf.random.stateless_normal((n, self.latent_dim), seed=seed)

    # -- helpers for the steps ------------------------------------------------------
    def draw_latent(self, local_batch, step, streams):
        """(c [B] int32, z_n [B, latent_dim]) of the global draw, this replica's slice."""
        c = self.draw_clusters(local_batch, self.step_seed(step, streams[0]))
        z = self.sigma * self.draw_noise(local_batch, self.step_seed(step, streams[1]))
        return c, z

    def critic_scores(self, x, training=True):
        scores, _ = self.critic(x, training=training)
        return scores[:, 0]

    # -- critic ---------------------------------------------------------------------
    def critic_step(self, data):
        """One WGAN-GP critic update on a batch of real data, `(x,)` or `x`."""
        x = data[0] if isinstance(data, (tuple, list)) else data
        batch = tf.shape(x)[0]
        step = tf.identity(self.d_optimizer.iterations)

        # Phase 1: fakes from the prior, and one interpolation epsilon PER EXAMPLE
        # (the authors' code used one per batch; see the module docstring).
        c, z = self.draw_latent(batch, step, streams=(0, 1))
        fake = self.generator([z, tf.one_hot(c, self.num_clusters)], training=True)
        epsilon = replica_slice(lambda n, s: tf.random.stateless_uniform((n,), s), batch, self.step_seed(step, 2))

        # Phase 2: critic. Minimise D(fake) - D(real) + lambda (||grad D(x_hat)|| - 1)^2.
        with tf.GradientTape() as tape:
            real_scores = self.critic_scores(x)
            fake_scores = self.critic_scores(fake)
            wasserstein = losses.wasserstein_critic_loss(real_scores, fake_scores)
            penalty = losses.gradient_penalty(self.critic_scores, x, fake, epsilon)
            d_per_example = wasserstein + self.gp_weight * penalty
            d_loss = losses.replica_mean(d_per_example)
        grads = self.gradients(tape, d_loss, self.critic.trainable_variables)
        self.apply_updates([(self.d_optimizer, grads, self.critic.trainable_variables)], d_loss)

        # Unscaled means over this replica's batch; the trainer averages replicas.
        return {
            "d_loss": tf.reduce_mean(d_per_example),
            # The critic's estimate of the Wasserstein distance E D(x) - E D(G(z)).
            "w_distance": -tf.reduce_mean(wasserstein),
            "gp": tf.reduce_mean(penalty),
        }

    # -- generator and encoder ----------------------------------------------------------
    def generator_step(self, data=None):
        """One joint update of G and E on a batch of generated samples. With `data` =
        (x, y), real samples with cluster labels y (pseudo-labels from a clustering of the
        data: not the paper, which never shows E real data), E_c also learns y from x, so
        that G's code c comes to draw what the data's cluster c holds."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = max(self.g_batch_size // replicas, 1)
        step = tf.identity(self.g_optimizer.iterations)

        # Phase 1: latent codes from the prior.
        c, z = self.draw_latent(batch, step, streams=(3, 4))

        # Phase 2: G and E jointly. G fools the critic; E recovers (z_n, c) from G(z).
        with tf.GradientTape() as tape:
            fake = self.generator([z, tf.one_hot(c, self.num_clusters)], training=True)
            adversarial = losses.wasserstein_generator_loss(self.critic_scores(fake))
            zn_hat, c_logits = self.encode(fake, training=True)
            zn_error = tf.reduce_sum(tf.square(z - zn_hat), axis=-1)
            if self.zn_loss == "mean":
                zn_error = zn_error / self.latent_dim
            c_error = losses.sparse_cross_entropy(c, c_logits)
            g_per_example = adversarial + self.beta_n * zn_error + self.beta_c * c_error
            g_loss = losses.replica_mean(g_per_example)
            if data is not None:
                x_real, y_real = data
                _, real_logits = self.encode(x_real, training=True)
                real_error = losses.sparse_cross_entropy(y_real, real_logits)
                g_loss += self.beta_c * losses.replica_mean(real_error)
        g_vars, e_vars = self.generator.trainable_variables, self.encoder.trainable_variables
        grads = self.gradients(tape, g_loss, g_vars + e_vars)
        self.apply_updates([(self.g_optimizer, grads[: len(g_vars)], g_vars),
                         (self.e_optimizer, grads[len(g_vars) :], e_vars)], g_loss)

        hits = tf.cast(tf.equal(tf.argmax(c_logits, -1, output_type=tf.int32), c), tf.float32)
        out = {
            "g_loss": tf.reduce_mean(g_per_example),
            "g_adv": tf.reduce_mean(adversarial),
            "zn_loss": tf.reduce_mean(zn_error),
            "c_loss": tf.reduce_mean(c_error),
            "e_acc_fake": tf.reduce_mean(hits),
        }
        if data is not None:
            out["c_loss_real"] = tf.reduce_mean(real_error)
        return out


# -- latent interpolation ------------------------------------------------------------------
def interpolate(model, c_from, c_to, steps=10, seed=0):
    """Samples along the straight line in latent space from cluster `c_from`'s code to
    `c_to`'s: z_n is fixed (drawn with `seed`) and z_c = (1 - t) onehot(c_from) +
    t onehot(c_to) for `steps` values of t from 0 to 1. Returns numpy [steps, *data_shape].

    The paper's observation: G passes smoothly from one cluster to another along such
    a path, although the critic never saw a blended code.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    for c in (c_from, c_to):
        if not 0 <= int(c) < model.num_clusters:
            raise ValueError(f"cluster ids must lie in [0, {model.num_clusters}), got {c}")
    t = tf.linspace(0.0, 1.0, steps)[:, None]
    k = model.num_clusters
    code = (1.0 - t) * tf.one_hot(int(c_from), k)[None] + t * tf.one_hot(int(c_to), k)[None]
    z = tf.repeat(model.sample_latent(1, seed=seed), steps, axis=0)
    return model.generate_from_code(z, code).numpy()


def interpolation_pairs(num_clusters, rows=5):
    """A few (from, to) cluster pairs for a figure: (0, 1), (2, 3), ... wrapping around."""
    rows = min(rows, (num_clusters + 1) // 2)
    return [((2 * i) % num_clusters, (2 * i + 1) % num_clusters) for i in range(rows)]


def interpolation_grid(model, pairs, steps=10, seed=0):
    """numpy [len(pairs), steps, *data_shape]: one `interpolate` row per (from, to) pair,
    every row from the same z_n."""
    return np.stack([interpolate(model, a, b, steps, seed) for a, b in pairs])
