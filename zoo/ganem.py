"""GAN-EM: EM clustering with a conditional GAN as M-step and an E-net as E-step.

Zhao et al., "GAN-EM: GAN based EM learning framework" (docs/models/ganem.md).

* M-step (`m_step`): a conditional generator G(z, c) and a discriminator D with
  K sigmoid heads. Head i learns "real and in cluster i", with real x weighted by
  the soft label w_i(x) that the last E-step gave it; every fake is fake for every
  head. G(., c) is trained to be taken for real by head c.
* E-step (`e_step`): the E-net learns to tell which cluster c a *generated*
  sample came from, with c drawn from the mixing prior pi. In the paper it never sees
  real data, except labelled data in the semi-supervised setting, where every E-step
  update adds the cross-entropy of a labelled batch (and labelled x keep w = onehot(y));
  the trainer's pseudo-labels (an option) pass confidently clustered real data the same way.
* Between the two (`update_prior`, driven by the trainer): w(x) = E(x) for all real
  x, and pi = mean of w.

`variant="authors-code"` follows the authors' public PyTorch code instead of the
paper where the two differ: D is a (K+1)-way softmax with a "fake" class, G is
trained with cross-entropy towards class c, E-step batches are class-balanced
and pi stays uniform.

The EM alternation itself belongs to the trainer; this file holds one step of
each phase and the pieces they are made of.
"""

import keras
import tensorflow as tf

from zoo import augment as augmentation
from zoo import losses
from zoo.base import ClusterModel
from zoo.configs import GANEMConfig
from zoo.networks import build_classifier, build_generator
from zoo.optimizers import Adam


@keras.saving.register_keras_serializable(package="zoo")
class GANEM(ClusterModel):
    """GAN-EM clustering model.

    Args:
        data_shape: shape of one sample, e.g. (28, 28, 1).
        num_clusters: K.
        latent_dim: size of z ~ N(0, I).
        embedding_dim: width of the extra E-net layer before its output (the
            dimensionality-reduction features); None uses the E-net trunk features.
        generator_loss: "mle" (the paper's -1/2 exp(logit)) or "nonsaturating"
            (variant "paper" only).
        logit_clip: upper clip of the logit inside the MLE loss's exp.
        e_batch_size: global batch of generated samples per E-step update.
        learn_prior: update pi from the E-step posteriors (False keeps it uniform;
            always False for variant "authors-code").
        variant: "paper" or "authors-code" (see the module docstring).
        augment: random small shifts and rotations of the E-net's training images
            (not in the paper): "none", "labelled" (the labelled real batch of the
            semi-supervised setting) or "all" (the generated samples too).
        architecture, seed: see `ClusterModel`.
    """

    zoo_name = "ganem"
    phases = ("m_step", "e_step")
    learning_rates = GANEMConfig.learning_rates()

    def __init__(
        self,
        data_shape,
        num_clusters=10,
        latent_dim=GANEMConfig.latent_dim,
        embedding_dim=None,
        generator_loss=GANEMConfig.generator_loss,
        logit_clip=GANEMConfig.logit_clip,
        e_batch_size=GANEMConfig.e_batch_size,
        learn_prior=True,
        variant=GANEMConfig.variant,
        augment="none",
        architecture="auto",
        seed=0,
        **kwargs,
    ):
        super().__init__(data_shape, num_clusters, latent_dim, architecture, seed, **kwargs)
        GANEMConfig.check_arguments(latent_dim=latent_dim, embedding_dim=embedding_dim,
                                    generator_loss=generator_loss, logit_clip=logit_clip,
                                    e_batch_size=e_batch_size, variant=variant, augment=augment)
        if augment != "none":
            augmentation.check_images(self.data_shape)
        self.variant = variant
        self.augment = augment
        self.embedding_dim = int(embedding_dim) if embedding_dim else None
        self.generator_loss = generator_loss
        self.logit_clip = float(logit_clip)
        self.e_batch_size = int(e_batch_size)
        self.learn_prior = bool(learn_prior) and variant == "paper"

        self.generator = build_generator(self.data_shape, latent_dim, num_clusters, architecture)
        # D's embedding output is unused. Paper: K sigmoid heads; authors' code: a
        # (K+1)-way softmax whose last class is "fake".
        d_outputs = num_clusters if variant == "paper" else num_clusters + 1
        self.discriminator = build_classifier(self.data_shape, d_outputs, None, architecture, name="discriminator")
        self.enet = build_classifier(self.data_shape, num_clusters, self.embedding_dim, architecture, name="enet")
        self.prior = self.add_weight(
            shape=(num_clusters,),
            initializer=keras.initializers.Constant(1.0 / num_clusters),
            trainable=False,
            name="prior",
        )
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim,
            generator_loss=self.generator_loss,
            logit_clip=self.logit_clip,
            e_batch_size=self.e_batch_size,
            learn_prior=self.learn_prior,
            variant=self.variant,
            augment=self.augment,
        )
        return config

    def compile(self, g_optimizer=None, d_optimizer=None, e_optimizer=None, **kwargs):
        """Optimizers default to Adam(beta1 0.5) at `learning_rates`."""
        super().compile(**kwargs)
        rates = self.learning_rates
        self.g_optimizer = g_optimizer or Adam(rates["g"], beta_1=0.5)
        self.d_optimizer = d_optimizer or Adam(rates["d"], beta_1=0.5)
        self.e_optimizer = e_optimizer or Adam(rates["e"], beta_1=0.5)
        # Only self.optimizer is built by Keras; build the others here, inside the
        # strategy scope, or their slots become placeholders under tf.distribute.
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.e_optimizer.build(self.enet.trainable_variables)

    # -- the common surface (cluster_probs and embed: the E-net's, from ClusterModel) ---
    def generate(self, z, c):
        return self.generator([z, tf.one_hot(c, self.num_clusters)], training=False)

    # -- M-step ---------------------------------------------------------------------
    def m_step(self, data):
        """One M-step update of D then G on a batch `(x, w)` of real data and soft labels."""
        x, w = data
        batch = tf.shape(x)[0]
        step = tf.identity(self.d_optimizer.iterations)

        # Phase 1: discriminator. Paper: real x counts for head i with weight w_i(x)
        # and fakes of every cluster are fake for every head. Authors' code: real x
        # is classified as w(x), fakes as the fake class.
        c = self.draw_clusters(batch, self.step_seed(step, 0))
        z = self.draw_noise(batch, self.step_seed(step, 1))
        fake = self.generator([z, tf.one_hot(c, self.num_clusters)], training=True)
        with tf.GradientTape() as tape:
            real_logits, _ = self.discriminator(x, training=True)
            fake_logits, _ = self.discriminator(fake, training=True)
            d_loss_fn = (losses.multihead_discriminator_loss if self.variant == "paper"
                         else losses.fake_class_discriminator_loss)
            d_real, d_fake = d_loss_fn(real_logits, w, fake_logits)
            d_loss = losses.replica_mean(d_real + d_fake)
        grads = self.gradients(tape, d_loss, self.discriminator.trainable_variables)
        self.apply_updates([(self.d_optimizer, grads, self.discriminator.trainable_variables)], d_loss)

        # Phase 2: generator. G(., c) should be taken for real by head c (paper), or
        # be classified as class c (authors' code).
        c = self.draw_clusters(batch, self.step_seed(step, 2))
        z = self.draw_noise(batch, self.step_seed(step, 3))
        with tf.GradientTape() as tape:
            fake = self.generator([z, tf.one_hot(c, self.num_clusters)], training=True)
            fake_logits, _ = self.discriminator(fake, training=True)
            head_logit = tf.gather(fake_logits, c, axis=1, batch_dims=1)
            if self.variant == "authors-code":
                g_per_example = losses.sparse_cross_entropy(c, fake_logits)
            elif self.generator_loss == "mle":
                g_per_example = losses.mle_generator_loss(head_logit, self.logit_clip)
            else:
                g_per_example = losses.nonsaturating_generator_loss(head_logit)
            g_loss = losses.replica_mean(g_per_example)
        grads = self.gradients(tape, g_loss, self.generator.trainable_variables)
        self.apply_updates([(self.g_optimizer, grads, self.generator.trainable_variables)], g_loss)

        # Unscaled means over this replica's batch; the trainer averages replicas.
        return {
            "d_loss": tf.reduce_mean(d_real + d_fake),
            "d_real": tf.reduce_mean(d_real),
            "g_loss": tf.reduce_mean(g_per_example),
            "d_fake_logit": tf.reduce_mean(head_logit),
        }

    # -- E-step ---------------------------------------------------------------------
    def e_step(self, labelled=None):
        """One E-net update on a batch of generated samples with c ~ pi (paper) or
        class-balanced c (authors' code); with `labelled` = (x_l, y_l), the
        semi-supervised cross-entropy on labelled real data is added."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = max(self.e_batch_size // replicas, 1)
        step = tf.identity(self.e_optimizer.iterations)

        if self.variant == "paper":
            c = self.draw_clusters(batch, self.step_seed(step, 4), prior=tf.convert_to_tensor(self.prior))
        else:
            c = self.draw_balanced_clusters(batch, self.step_seed(step, 4))
        z = self.draw_noise(batch, self.step_seed(step, 5))
        fake = self.generator([z, tf.one_hot(c, self.num_clusters)], training=False)
        # Augmentation (an option, not the paper): the E-net sees every image in a new pose.
        if self.augment == "all":
            fake = augmentation.random_pose(fake, self.step_seed(step, 6))
        if labelled is not None and self.augment != "none":
            x_l, y_l = labelled
            labelled = (augmentation.random_pose(x_l, self.step_seed(step, 7)), y_l)
        return self.enet_update(fake, c, labelled)

    # -- between E and M ------------------------------------------------------------
    def update_prior(self, soft_labels):
        """pi <- mean of the posteriors w(x) over real data (a no-op with a fixed prior)."""
        if self.learn_prior:
            self.prior.assign(tf.reduce_mean(tf.convert_to_tensor(soft_labels, tf.float32), axis=0))
