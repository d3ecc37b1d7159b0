"""KM-GAN (Wang, Chen & Shang, K-Means-GAN): K-Means on discriminator features replaces real labels.

The discriminator D is a feature extractor f(x) in R^m, not a classifier. K-Means on f(real)
(k-means++ seeding, then mini-batch updates) gives centers c_k and labels; with them

    L_D = [mean ||f(x) - c_{y(x)}||^2
           + mean max(0, (1 + margin) mean ||f(x) - c_{y(x)}||^2 - ||f(G(z)) - c_{y(G(z))}||^2)] / spread
          (+ lambda R_intra), spread = harmonic mean of the squared distances between the batch's real class means
    L_G = mean ||f(G(z)) - c_{y(G(z))}||^2                                 (+ lambda R_inter)
    L_center = mean over classes k of ||mean_{y(x)=k} f(x) - mean_{y(G(z))=k} f(G(z))||^2

and every training step is the paper's three-step alternation: (1) adversarial updates of D
then G, (2) a joint update of D and G through the center loss, (3) a mini-batch K-Means
update of the centers with the new real features. D's weights are clipped to [-clip, clip]
after each of its updates (the paper's stabiliser).

Our reading where the extracted text of the paper lost its formulas (documented, and options
where it matters):

* D's loss is made scale-free and bounded, where the extracted text's is not: (a) its push
  term has a margin relative to the real samples' own distances (as triplet losses do): the
  unbounded `- ||f(G(z)) - c||^2` grew without limit even with weight clipping (0.05); (b)
  it is divided by the spread of the real class means: otherwise D lowers its pull term by
  shrinking every feature onto one point, and within 100-200 steps every real sample was
  in one cluster (measured on `synthetic` and `digits`). The spread is the harmonic mean
  over pairs of classes, which the closest pair dominates: with the arithmetic mean D
  could still let two clusters merge while the others moved apart, and on
  `synthetic:clusters=4` two blobs merged after 1,000-1,500 steps in 2 of 3 seeds. Even so,
  on images the features D learns for the game cluster worse than its random initial
  features (see docs/models/kmgan.md).
* Zoo contract: every model has a generator per cluster. With `conditional=True` (default)
  G takes the one-hot cluster c and a fake's class is c, so the K-Means labels play exactly
  the role of CGAN's real labels, which is the paper's motivation. With `conditional=False`
  (the paper's unconditional G) a fake's class is its nearest real center and the exported
  generator ignores its `cluster` input.
* Centers are model state (non-trainable variables, checkpointed and exported). The step
  sums real features per class on every replica, all-reduces the sums and counts, and
  updates the mirrored centers once in cross-replica context, so all replicas hold the
  same centers. Per-center counts are capped at `center_memory` so that centers keep
  following features that D keeps moving.
* The center loss uses each replica's batch means (the gradient is then averaged).
* Generalised variant (`regularizer_weight` lambda > 0): R_intra = mean ||f(x) - mean f(x)||^2
  (D makes real data compact as a whole), R_inter = ||mean f(x) - mean f(G(z))||^2 (G moves
  the fake mean to the real one).
* Reduced variant (`space="pixel"`): K-Means runs on pixels; labels come from the pixel
  centers, the losses stay in feature space with per-class feature centers updated from
  those labels, and real data are clustered by their nearest pixel center.
* Not the paper (the trainer's default start): clusters held fixed. The most confident
  members of a start clustering's clusters are trained with those clusters as their labels
  (`alternation_step` on (x, y)), in place of their nearest centers, and the centers start at their
  class means. D then learns features in which those clusters are compact; real data are
  still clustered by their nearest center.
* The E-net classifier of the export: probabilities = softmax(-||f(x) - c_k||^2 / temperature)
  (pixel distances in the reduced variant); cluster = the nearest center.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo import kmeans, losses
from zoo.base import ClusterModel
from zoo.configs import KMGANConfig
from zoo.networks import build_classifier, build_generator
from zoo.optimizers import Adam


def clip_weights(variables, box):
    """Clips mirrored variables to [-box, box] once, in cross-replica context."""

    def clip(distribution, variables):
        for v in variables:
            v.assign(tf.clip_by_value(v, -box, box))

    tf.distribute.get_replica_context().merge_call(clip, args=(variables,))


@keras.saving.register_keras_serializable(package="zoo")
class KMGAN(ClusterModel):
    """KM-GAN clustering model.

    Args:
        data_shape, num_clusters, latent_dim, architecture, seed: see `ClusterModel`.
        feature_dim: m, the width of D's feature output.
        space: "feature" (KM-GAN) or "pixel" (the paper's reduced variant).
        conditional: G takes the cluster as a condition (see the module docstring).
        clip: box of D's weight clipping (0: none).
        center_weight: weight of the center loss in the joint update.
        regularizer_weight: lambda of the generalised variant (0: regular KM-GAN).
        temperature: of the exported cluster probabilities, in squared-distance units.
        center_memory: cap of the per-center counts of mini-batch K-Means.
        reassign_below: a center whose share of real samples falls below this fraction of 1/K
            is moved to the real sample farthest from its center (as scikit-learn's
            MiniBatchKMeans reassigns), one center per step; 0 turns it off.
        margin: D pushes a fake only while its squared distance to its center is below (1 + margin)
            times the mean squared distance of real samples to theirs.
    """

    zoo_name = "kmgan"
    phases = ("alternation_step",)
    learning_rates = KMGANConfig.learning_rates()

    def __init__(
        self,
        data_shape,
        num_clusters=10,
        latent_dim=KMGANConfig.latent_dim,
        feature_dim=KMGANConfig.feature_dim,
        space=KMGANConfig.space,
        conditional=True,
        clip=KMGANConfig.clip,
        center_weight=KMGANConfig.center_weight,
        regularizer_weight=KMGANConfig.regularizer_weight,
        temperature=KMGANConfig.temperature,
        center_memory=KMGANConfig.center_memory,
        margin=KMGANConfig.margin,
        reassign_below=0.25,
        architecture="auto",
        seed=0,
        **kwargs,
    ):
        super().__init__(data_shape, num_clusters, latent_dim, architecture, seed, **kwargs)
        KMGANConfig.check_arguments(latent_dim=latent_dim, feature_dim=feature_dim, space=space, clip=clip,
                                    center_weight=center_weight, regularizer_weight=regularizer_weight,
                                    temperature=temperature, center_memory=center_memory, margin=margin)
        self.feature_dim, self.space, self.conditional = int(feature_dim), space, bool(conditional)
        self.clip, self.center_weight = float(clip), float(center_weight)
        self.regularizer_weight, self.temperature = float(regularizer_weight), float(temperature)
        self.center_memory = float(center_memory)
        self.margin = float(margin)
        if not 0 <= float(reassign_below) < 1:
            raise ValueError(f"reassign_below must lie in [0, 1), got {reassign_below}")
        self.reassign_below = float(reassign_below)

        # G(z, onehot(c)) (or G(z)); D: the shared trunk and a linear head of width m, no batch norm.
        self.generator = build_generator(self.data_shape, self.latent_dim,
                                         self.num_clusters if self.conditional else 0, architecture)
        self.discriminator = build_classifier(self.data_shape, self.feature_dim, None, architecture,
                                              name="feature_extractor")
        k, pixels = self.num_clusters, int(np.prod(self.data_shape))
        state = dict(trainable=False, dtype="float32")
        self.centers = keras.Variable(np.zeros((k, self.feature_dim)), name="centers", **state)
        self.center_counts = keras.Variable(np.zeros(k), name="center_counts", **state)
        # Moving average of the share of real samples each center gets (for reassignment).
        self.center_usage = keras.Variable(np.full(k, 1.0 / k), name="center_usage", **state)
        if space == "pixel":
            self.pixel_centers = keras.Variable(np.zeros((k, pixels)), name="pixel_centers", **state)
            self.pixel_counts = keras.Variable(np.zeros(k), name="pixel_counts", **state)
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(feature_dim=self.feature_dim, space=self.space, conditional=self.conditional, clip=self.clip,
                      center_weight=self.center_weight, regularizer_weight=self.regularizer_weight,
                      temperature=self.temperature, center_memory=self.center_memory, margin=self.margin,
                      reassign_below=self.reassign_below)
        return config

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        """Optimizers default to DCGAN's Adam(beta1 0.5) at `learning_rates`."""
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer or Adam(self.learning_rates["g"], beta_1=0.5)
        self.d_optimizer = d_optimizer or Adam(self.learning_rates["d"], beta_1=0.5)
        # Built here, inside the strategy scope: optimizer slots made outside it are not mirrored.
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    # -- the common surface -------------------------------------------------------
    def features(self, x, training=False):
        features, _ = self.discriminator(x, training=training)
        return features

    def _flat(self, x):
        return tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])

    def center_distances(self, x):
        """[N, K] squared distances to the centers that define the clusters of real data."""
        if self.space == "pixel":
            return tf.maximum(kmeans.squared_distances(self._flat(x), tf.convert_to_tensor(self.pixel_centers)), 0.)
        return tf.maximum(kmeans.squared_distances(self.features(x), tf.convert_to_tensor(self.centers)), 0.)

    def cluster_probs(self, x):
        return tf.nn.softmax(-self.center_distances(x) / self.temperature)

    def embed(self, x):
        return self.features(x)

    def generate(self, z, c):
        if not self.conditional:  # the paper's unconditional G: the cluster is not an input
            return self.generator([z, tf.zeros((tf.shape(z)[0], 0))], training=False)
        return self.generator([z, tf.one_hot(c, self.num_clusters)], training=False)

    # -- K-Means state ------------------------------------------------------------
    def init_centers(self, x, iterations=10, restarts=5, labels=None):
        """k-means++ seeding and a few Lloyd iterations on `x` (numpy, a sample of real data),
        the best of `restarts` seedings by inertia; with `labels` [N] (clusters held fixed),
        the features' class means instead. Called once by the trainer before training,
        outside the replicated step."""
        seed = tf.constant([self.seed, 7], tf.int64)
        if self.clip > 0:  # centers must be those of the clipped D that training will use
            for v in self.discriminator.trainable_variables:
                v.assign(tf.clip_by_value(v, -self.clip, self.clip))

        features = tf.concat([self.features(x[i:i + 500]) for i in range(0, len(x), 500)], 0)
        if labels is not None:
            if self.space == "pixel":
                raise ValueError("clusters held fixed (labels) need space='feature'")
            sums, counts = kmeans.class_sums(features, tf.convert_to_tensor(labels, tf.int32), self.num_clusters)
            self.centers.assign(sums / tf.maximum(counts, 1.0)[:, None])
        elif self.space == "pixel":
            pixel_centers, labels = kmeans.fit(self._flat(x), self.num_clusters, seed, iterations, restarts)
            self.pixel_centers.assign(pixel_centers)
            self.pixel_counts.assign(tf.minimum(kmeans.class_sums(self._flat(x), labels, self.num_clusters)[1],
                                                self.center_memory))
            sums, counts = kmeans.class_sums(features, labels, self.num_clusters)
            self.centers.assign(sums / tf.maximum(counts, 1.0)[:, None])
        else:
            centers, labels = kmeans.fit(features, self.num_clusters, seed, iterations, restarts)
            self.centers.assign(centers)
            counts = kmeans.class_sums(features, labels, self.num_clusters)[1]
        self.center_counts.assign(tf.minimum(counts, self.center_memory))

    def real_labels(self, x, features):
        """K-Means labels of real samples: nearest center in feature (or pixel) space."""
        space = self._flat(x) if self.space == "pixel" else features
        centers = self.pixel_centers if self.space == "pixel" else self.centers
        return kmeans.assign(tf.stop_gradient(space), tf.convert_to_tensor(centers))[0]

    def fake_labels(self, fake, features, c):
        return c if self.conditional else self.real_labels(fake, features)

    def _draw(self, batch, step, streams):
        z = self.draw_noise(batch, self.step_seed(step, streams[0]))
        c = self.draw_clusters(batch, self.step_seed(step, streams[1]))
        condition = tf.one_hot(c, self.num_clusters) if self.conditional else tf.zeros((batch, 0))
        return z, c, condition

    def _clip_discriminator(self):
        if self.clip > 0:
            clip_weights(self.discriminator.trainable_variables, self.clip)

    # -- one training step: the three-step alternation ------------------------------
    def alternation_step(self, data):
        """One step on real data `x` (or `(x,)`); `(x, y)`: with the real samples' clusters y held
        fixed (pseudo-labels of a start clustering, not the paper) instead of their nearest centers."""
        if isinstance(data, (tuple, list)) and len(data) == 2:
            x, held = data
            labels_of = lambda x, features: tf.cast(held, tf.int32)  # noqa: E731
        else:
            x = data[0] if isinstance(data, (tuple, list)) else data
            held, labels_of = None, self.real_labels
        batch = tf.shape(x)[0]
        step = tf.identity(self.d_optimizer.iterations)
        centers = tf.convert_to_tensor(self.centers)
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables

        # Step 1a: D pulls real features to their centers and pushes fakes away from the
        # center of their class (plus lambda R_intra in the generalised variant).
        z, c, condition = self._draw(batch, step, (0, 1))
        fake = self.generator([z, condition], training=True)
        with tf.GradientTape() as tape:
            f_real = self.features(x, training=True)
            f_fake = self.features(fake, training=True)
            y_real, y_fake = labels_of(x, f_real), self.fake_labels(fake, f_fake, c)
            pull = tf.reduce_sum(tf.square(f_real - tf.gather(centers, y_real)), 1)
            push = tf.reduce_sum(tf.square(f_fake - tf.gather(centers, y_fake)), 1)
            # Triplet-style, relative to the feature scale (which clipping keeps small): a fake is
            # pushed only until it is (1 + margin) times as far from its center as real samples
            # are from theirs on average.
            target = (1.0 + self.margin) * tf.stop_gradient(tf.reduce_mean(pull))
            # Scale-free: divided by the spread of this batch's real class means, so D cannot
            # lower its loss by shrinking all features onto one point.
            sums, counts = kmeans.class_sums(f_real, y_real, self.num_clusters)
            means = sums / tf.maximum(counts, 1.0)[:, None]
            present = tf.cast(counts > 0, tf.float32)
            pairs = present[:, None] * present[None, :] * (1.0 - tf.eye(self.num_clusters))
            # Harmonic mean over pairs of classes: dominated by the closest pair, so D gains
            # nothing by letting two clusters merge while the others move apart.
            gaps = tf.maximum(kmeans.squared_distances(means, means), 0.0) + 1e-12
            spread = tf.reduce_sum(pairs) / tf.maximum(tf.reduce_sum(pairs / gaps), 1e-12)
            d_per_example = (pull + tf.nn.relu(target - push)) / (spread + 1e-6)
            if self.regularizer_weight:
                intra = tf.reduce_sum(tf.square(f_real - tf.reduce_mean(f_real, 0)), 1)
                d_per_example += self.regularizer_weight * intra
            d_loss = losses.replica_mean(d_per_example)
        self.apply_updates([(self.d_optimizer, self.gradients(tape, d_loss, d_vars), d_vars)], d_loss)
        self._clip_discriminator()

        # Step 1b: G pulls its samples' features to the center of their class.
        z, c, condition = self._draw(batch, step, (2, 3))
        with tf.GradientTape() as tape:
            fake = self.generator([z, condition], training=True)
            f_fake = self.features(fake, training=True)
            y_fake = self.fake_labels(fake, f_fake, c)
            g_per_example = tf.reduce_sum(tf.square(f_fake - tf.gather(centers, y_fake)), 1)
            if self.regularizer_weight:
                inter = tf.reduce_sum(tf.square(tf.reduce_mean(tf.stop_gradient(self.features(x)), 0)
                                                - tf.reduce_mean(f_fake, 0)))
                g_per_example += self.regularizer_weight * inter
            g_loss = losses.replica_mean(g_per_example)
        self.apply_updates([(self.g_optimizer, self.gradients(tape, g_loss, g_vars), g_vars)], g_loss)

        # Step 2: the center loss, a joint update of D and G: per-class means of real and
        # generated features are pulled together, for the classes present in both.
        z, c, condition = self._draw(batch, step, (4, 5))
        with tf.GradientTape() as tape:
            fake = self.generator([z, condition], training=True)
            f_real = self.features(x, training=True)
            f_fake = self.features(fake, training=True)
            y_real, y_fake = labels_of(x, f_real), self.fake_labels(fake, f_fake, c)
            real_sums, real_counts = kmeans.class_sums(f_real, y_real, self.num_clusters)
            fake_sums, fake_counts = kmeans.class_sums(f_fake, y_fake, self.num_clusters)
            present = tf.cast((real_counts > 0) & (fake_counts > 0), tf.float32)
            gap = tf.reduce_sum(tf.square(real_sums / tf.maximum(real_counts, 1.0)[:, None]
                                          - fake_sums / tf.maximum(fake_counts, 1.0)[:, None]), 1)
            center_loss = tf.reduce_sum(present * gap) / tf.maximum(tf.reduce_sum(present), 1.0)
            joint = losses.replica_mean(self.center_weight * center_loss[None])
        grads = self.gradients(tape, joint, d_vars + g_vars)
        self.apply_updates([(self.d_optimizer, grads[: len(d_vars)], d_vars),
                            (self.g_optimizer, grads[len(d_vars):], g_vars)], joint)
        self._clip_discriminator()

        # Step 3: mini-batch K-Means on the new real features, summed over all replicas.
        features = self.features(x, training=False)
        self._update_centers(x, features, labels_of(x, features), reassign=held is None)

        return {
            "d_loss": tf.reduce_mean(d_per_example),
            "g_loss": tf.reduce_mean(g_per_example),
            "center_loss": center_loss,
            "pull": tf.reduce_mean(pull),
            "push": tf.reduce_mean(push),
        }

    def _update_centers(self, x, features, labels, reassign=True):
        context = tf.distribute.get_replica_context()
        sums, counts = kmeans.class_sums(features, labels, self.num_clusters)
        sums, counts = context.all_reduce("sum", sums), context.all_reduce("sum", counts)
        # The real sample farthest from its center: where a dead center is moved to.
        points = self._flat(x) if self.space == "pixel" else features
        own = tf.gather(tf.convert_to_tensor(self.pixel_centers if self.space == "pixel" else self.centers), labels)
        farthest = tf.argmax(tf.reduce_sum(tf.square(points - own), 1))
        spare = (features[farthest], points[farthest])
        if self.space == "pixel":
            pixel_sums, pixel_counts = kmeans.class_sums(self._flat(x), labels, self.num_clusters)
            pixel_sums = context.all_reduce("sum", pixel_sums)

        def update(distribution, sums, counts, spare, *pixel):
            # Runs once for all replicas; per-replica values: replica 0's (sums are all-reduced).
            first = lambda v: distribution.experimental_local_results(v)[0]  # noqa: E731
            sums, counts = first(sums), first(counts)
            spare_feature, spare_point = first(spare[0]), first(spare[1])
            k = self.num_clusters
            share = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
            usage = 0.95 * tf.convert_to_tensor(self.center_usage) + 0.05 * share
            worst = tf.argmin(usage)
            dead = tf.logical_and(usage[worst] < self.reassign_below / k, tf.one_hot(worst, k) > 0)
            dead = tf.logical_and(dead, reassign)  # held clusters keep their centers
            self.center_usage.assign(tf.where(dead, 1.0 / k, usage))
            centers, new_counts = kmeans.minibatch_update(tf.convert_to_tensor(self.centers),
                                                          tf.convert_to_tensor(self.center_counts), sums, counts)
            self.centers.assign(tf.where(dead[:, None], spare_feature[None, :], centers))
            self.center_counts.assign(tf.where(dead, 1.0, tf.minimum(new_counts, self.center_memory)))
            if pixel:
                centers, new_counts = kmeans.minibatch_update(tf.convert_to_tensor(self.pixel_centers),
                                                              tf.convert_to_tensor(self.pixel_counts),
                                                              first(pixel[0]), counts)
                self.pixel_centers.assign(tf.where(dead[:, None], spare_point[None, :], centers))
                self.pixel_counts.assign(tf.where(dead, 1.0, tf.minimum(new_counts, self.center_memory)))

        extra = (pixel_sums,) if self.space == "pixel" else ()
        context.merge_call(update, args=(sums, counts, spare, *extra))
