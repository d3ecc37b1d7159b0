"""What every model of the zoo shares: the public surface and replica-aware noise.

Trainers, export and serving treat every model alike through four methods:
`cluster_probs(x)`, `embed(x)`, `generate(z, c)` and `sample_latent(n, seed)`. `classify`
and `sample` complete the vocabulary the loaded exports (`zoo.load`) and the serving
client (`serving.client.ZooClient`) share.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo import losses
from zoo.hub import cluster_ids

# Independent noise streams of one training step (e.g. the fakes of the
# discriminator phase and of the generator phase are different draws).
NUM_STREAMS = 8


def replica_slice(draw, local_batch, seed):
    """Draws a *global* batch with `draw(global_batch, seed)` and returns this replica's slice.

    Every replica computes the same global draw from the same stateless seed and
    keeps its own rows, so (a) replicas train on different noise, and (b) a step on
    R replicas sees exactly the noise of one replica running the whole global batch.
    """
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return draw(local_batch, seed)
    replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
    full = draw(local_batch * replicas, seed)
    return full[replica_id * local_batch : (replica_id + 1) * local_batch]


# Dynamic loss scaling for float16 (as keras.optimizers.LossScaleOptimizer): start high,
# halve on every overflow, double after this many finite steps in a row.
LOSS_SCALE_INITIAL = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000


def _squared_norm(updates, loss=None):
    """Half the squared norm of all gradients, plus 0 x the loss: finite exactly when the loss
    and every gradient are finite and their sum of squares stays within float32 (any element
    above about 2.6e19 overflows it, and would overflow Adam's second moment anyway). One fused
    kernel per gradient (l2_loss), several times cheaper than an elementwise is_finite test."""
    norms = [tf.nn.l2_loss(tf.cast(g, tf.float32)) for _, grads, _ in updates for g in grads if g is not None]
    if loss is not None:
        norms.append(tf.cast(loss, tf.float32) * 0.0)
    return tf.add_n(norms)


def apply_if_finite(updates, loss=None, loss_scale=None):
    """Applies `updates`, a list of (optimizer, gradients, variables), only if the loss and
    every gradient are finite on every replica (`_squared_norm`); otherwise none of them (all
    or nothing).

    Returns a float32 scalar: 1.0 if applied, 0.0 if skipped. The optimizers' step
    counters do not advance on a skipped step. Keras optimizers synchronise replicas
    with `merge_call`, which may not sit inside a `cond` in a replica context, so the
    `cond` runs in cross-replica context (as keras.optimizers.LossScaleOptimizer does).
    `loss_scale` = (scale, finite steps in a row) variables of float16 training, updated here.
    """
    context = tf.distribute.get_replica_context()
    finite = tf.math.is_finite(context.all_reduce(tf.distribute.ReduceOp.SUM, _squared_norm(updates, loss)))

    def apply_each(pairs):
        for optimizer, (grads, variables) in zip([u[0] for u in updates], pairs):
            optimizer.apply_gradients(zip(grads, variables))

    def in_cross_replica(distribution, finite, pairs):
        finite = distribution.experimental_local_results(finite)[0]  # equal on all replicas (all-reduced)
        tf.cond(finite, lambda: distribution.extended.call_for_each_replica(apply_each, args=(pairs,)),
                lambda: None)
        if loss_scale is not None:
            scale, streak = loss_scale
            streak_now = tf.where(finite, streak + 1, tf.zeros_like(streak))
            grow = streak_now >= LOSS_SCALE_GROWTH_STEPS
            scale.assign(tf.where(finite, tf.where(grow, scale * 2.0, scale), scale / 2.0))
            streak.assign(tf.where(grow, tf.zeros_like(streak), streak_now))

    pairs = [(list(grads), list(variables)) for _, grads, variables in updates]
    context.merge_call(in_cross_replica, args=(finite, pairs))
    return tf.cast(finite, tf.float32)


class ClusterModel(keras.Model):
    """Base class of the zoo's models.

    Args:
        data_shape: shape of one sample, e.g. (28, 28, 1) or (100,).
        num_clusters: K.
        latent_dim: size of the generator's noise input.
        architecture: "auto", "conv" or "mlp" (see `zoo.networks`).
        seed: base seed of every noise draw made during training.
    """

    # Name used for servables and metadata, e.g. "ganem" -> ganem_enet, ganem_generator.
    zoo_name = None
    # The update methods one training iteration alternates, in order; `python -m
    # trainers.<zoo_name>` schedules them.
    phases = ()
    # Adam learning rates by network (g, d, e) when `compile` is given no optimizer: the model's
    # zoo.configs lr_* fields, the trainer's defaults too, so the Python API and the command
    # line train the same model.
    learning_rates = {}

    def __init__(self, data_shape, num_clusters, latent_dim, architecture="auto", seed=0, **kwargs):
        super().__init__(**kwargs)
        if int(num_clusters) < 2:
            raise ValueError(f"num_clusters must be at least 2, got {num_clusters}")
        self.data_shape = tuple(int(d) for d in data_shape)
        self.num_clusters = int(num_clusters)
        self.latent_dim = int(latent_dim)
        self.architecture = architecture
        self.seed = int(seed)
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
        self.loss_scale = None
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            self.loss_scale = keras.Variable(LOSS_SCALE_INITIAL, dtype="float32", trainable=False, name="loss_scale")
            self.loss_scale_streak = keras.Variable(0, dtype="int64", trainable=False, name="loss_scale_streak")

    def get_config(self):
        config = super().get_config()
        config.update(
            data_shape=list(self.data_shape),
            num_clusters=self.num_clusters,
            latent_dim=self.latent_dim,
            architecture=self.architecture,
            seed=self.seed,
        )
        return config

    # -- the common surface -------------------------------------------------------
    def cluster_probs(self, x):
        """[N, *data_shape] -> [N, K] posterior over clusters. Default: the softmax of an
        E-net classifier `self.enet` (a `networks.build_classifier`), as GAN-EM and GM-GAN have."""
        logits, _ = self.enet(x, training=False)
        return tf.nn.softmax(logits)

    def embed(self, x):
        """[N, *data_shape] -> [N, d] features used for clustering / plots (default: the E-net's embedding)."""
        _, embedding = self.enet(x, training=False)
        return embedding

    def generate(self, z, c):
        """Noise [N, latent_dim] and cluster ids [N] -> samples [N, *data_shape]."""
        raise NotImplementedError

    @property
    def embedding_size(self):
        return int(self.embed(tf.zeros((1, *self.data_shape))).shape[-1])

    def sample_latent(self, n, seed=0):
        """Noise for `generate`: [n, latent_dim] standard normal, reproducible by seed."""
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return tf.random.stateless_normal((n, self.latent_dim), seed=seed)

    def classify(self, x):
        """[N, *data_shape] -> {"probabilities" [N, K], "cluster" [N], "embedding" [N, d]}."""
        probabilities = self.cluster_probs(x)
        return {"probabilities": probabilities, "cluster": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
                "embedding": self.embed(x)}

    def sample(self, cluster, count=1, seed=0, **options):
        """`count` samples of `cluster` (an id, or one id per sample) from the noise of `seed`,
        as the exported generator's `sample` signature draws them; `options` go to `generate`
        (GM-GAN: `scale`)."""
        clusters = tf.constant(cluster_ids(cluster, count), tf.int32)
        return self.generate(self.sample_latent(len(clusters), seed=seed), clusters, **options)

    def balanced_samples(self, count, seed=0, batch_size=500, **options):
        """numpy [count, *data_shape]: generated samples with every cluster equally often
        (sample i is of cluster i % K), from the noise of `seed`, `batch_size` at a time (what
        the reference classifier scores); `options` go to `generate`."""
        clusters = np.arange(count) % self.num_clusters
        noise = self.sample_latent(count, seed=seed)
        return np.concatenate([
            keras.ops.convert_to_numpy(self.generate(noise[i:i + batch_size], clusters[i:i + batch_size], **options))
            for i in range(0, count, batch_size)])

    def call(self, x):
        # The forward pass Keras builds the model with: the E-net classifier.
        return self.cluster_probs(x)

    # -- training is an alternation of phases, not Keras' one train_step --------------
    def fit(self, *args, **kwargs):
        raise NotImplementedError(self._not_fit())

    def train_step(self, data):
        raise NotImplementedError(self._not_fit())

    def _not_fit(self):
        return (f"{type(self).__name__} does not train with fit(): one iteration alternates "
                f"{', '.join(self.phases)}; train it with `python -m trainers.{self.zoo_name}` "
                f"(from Python: trainers.{self.zoo_name}.main(Config(...)))")

    # -- helpers for train steps --------------------------------------------------
    def gradients(self, tape, loss, variables):
        """tape.gradient(loss, variables), through the loss scale under mixed float16."""
        if self.loss_scale is None:
            return tape.gradient(loss, variables)
        scale = tf.convert_to_tensor(self.loss_scale)
        grads = tape.gradient(loss, variables, output_gradients=tf.cast(scale, loss.dtype))
        return [None if g is None else g / tf.cast(scale, g.dtype) for g in grads]

    def enet_update(self, fake, c, labelled=None):
        """One update of the E-net `self.enet` (optimizer `self.e_optimizer`) on generated
        samples `fake` labelled with the cluster `c` that made them; with `labelled` =
        (x_l, y_l) the cross-entropy of labelled real data is added (semi-supervision)."""
        with tf.GradientTape() as tape:
            logits, _ = self.enet(fake, training=True)
            e_per_example = losses.sparse_cross_entropy(c, logits)
            e_loss = losses.replica_mean(e_per_example)
            if labelled is not None:
                x_l, y_l = labelled
                labelled_logits, _ = self.enet(x_l, training=True)
                labelled_per_example = losses.sparse_cross_entropy(y_l, labelled_logits)
                e_loss += losses.replica_mean(labelled_per_example)
        variables = self.enet.trainable_variables
        self.apply_updates([(self.e_optimizer, self.gradients(tape, e_loss, variables), variables)], e_loss)

        hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(c, tf.int32)), tf.float32)
        out = {"e_loss": tf.reduce_mean(e_per_example), "e_acc_fake": tf.reduce_mean(hits)}
        if labelled is not None:
            out["e_loss_labelled"] = tf.reduce_mean(labelled_per_example)
        return out

    def apply_updates(self, updates, loss):
        """`apply_if_finite` of this model: all (optimizer, gradients, variables) or none."""
        scale = None if self.loss_scale is None else (self.loss_scale, self.loss_scale_streak)
        return apply_if_finite(updates, loss, loss_scale=scale)

    def step_seed(self, counter, stream):
        """Stateless seed of noise stream `stream` at optimizer step `counter`."""
        counter = tf.cast(counter, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), counter * NUM_STREAMS + stream])

    def draw_noise(self, local_batch, seed):
        return replica_slice(
            lambda n, s: tf.random.stateless_normal((n, self.latent_dim), seed=s), local_batch, seed
        )

    def draw_clusters(self, local_batch, seed, prior=None):
        """Cluster ids [local_batch] int32, uniform or from `prior` [K] probabilities."""

        def draw(n, s):
            if prior is None:
                return tf.random.stateless_uniform((n,), s, maxval=self.num_clusters, dtype=tf.int32)
            # Inverse CDF rather than stateless_categorical, which XLA cannot compile on a CPU.
            prior_ = tf.cast(prior, tf.float32)
            cdf = tf.cumsum(prior_ / tf.reduce_sum(prior_))[:-1]
            u = tf.random.stateless_uniform((n,), s)
            return tf.reduce_sum(tf.cast(u[:, None] >= cdf[None, :], tf.int32), axis=1)

        return replica_slice(draw, local_batch, seed)

    def draw_balanced_clusters(self, local_batch, seed):
        """Cluster ids [local_batch] int32 with every cluster equally often in the global batch."""

        def draw(n, s):
            # A permutation by sorting random keys: stateless_shuffle has no XLA kernel on a CPU.
            order = tf.argsort(tf.random.stateless_uniform((n,), s))
            return tf.gather(tf.range(n) % self.num_clusters, order)

        return replica_slice(draw, local_batch, seed)
