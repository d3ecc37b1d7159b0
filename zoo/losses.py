"""Losses of the zoo's GANs, all per example ([batch] tensors).

Per-example losses let the caller average over the *global* batch
(`replica_mean`), which is what keeps gradients right under tf.distribute:
Keras sums gradients across replicas, it does not average them.
"""

import tensorflow as tf


def replica_mean(per_example):
    """Mean over the local batch divided by the number of replicas: summed over
    replicas by the optimizer's all-reduce, this is the mean over the global batch."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.reduce_mean(per_example) / tf.cast(replicas, per_example.dtype)


def multihead_discriminator_loss(real_logits, real_weights, fake_logits):
    """GAN-EM's M-step discriminator loss, negated for minimisation (docs/models/ganem.md).

    L_D = E_x sum_i w_i(x) log D_i(x) + E_z,c sum_i log(1 - D_i(G(z, c))) is maximised;
    every head i sees every fake as fake, and real x with weight w_i(x).
    Returns (real part [B], fake part [B]); the loss is their sum.
    `log sigmoid(l) = -softplus(-l)` and `log(1 - sigmoid(l)) = -softplus(l)` keep it stable.
    """
    real = tf.reduce_sum(real_weights * tf.math.softplus(-real_logits), axis=-1)
    fake = tf.reduce_sum(tf.math.softplus(fake_logits), axis=-1)
    return real, fake


def fake_class_discriminator_loss(real_logits, real_weights, fake_logits):
    """The GAN-EM authors' code: D is a (K+1)-way softmax whose last class is "fake".

    Real x is pushed towards the soft labels [w(x), 0], every fake towards class K.
    Returns (real part [B], fake part [B]).
    """
    fake_class = tf.shape(fake_logits)[-1] - 1
    real_targets = tf.pad(real_weights, [[0, 0], [0, 1]])
    real = soft_cross_entropy(real_targets, real_logits)
    fake = sparse_cross_entropy(tf.fill(tf.shape(fake_logits)[:1], fake_class), fake_logits)
    return real, fake


def mle_generator_loss(logits, logit_clip=10.0):
    """GAN-EM's generator loss: -1/2 exp(logit D_c(G(z, c))).

    With D optimal, D/(1-D) = p_data/p_model, so this is the MLE-GAN objective.
    exp of an unbounded logit overflows: the logit is clipped from above, and the
    clip passes the gradient straight through so a confident D still teaches G.
    """
    clipped = logits + tf.stop_gradient(tf.minimum(logits, logit_clip) - logits)
    return -0.5 * tf.exp(clipped)


def nonsaturating_generator_loss(logits):
    """-log D_c(G(z, c)): the non-saturating loss (BCE towards "real", as in the
    GAN-EM authors' code)."""
    return tf.math.softplus(-logits)


GENERATOR_LOSSES = {"mle": mle_generator_loss, "nonsaturating": nonsaturating_generator_loss}


def sparse_cross_entropy(labels, logits):
    """[B] cross-entropy of integer labels against logits."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


def soft_cross_entropy(targets, logits):
    """[B] cross-entropy of probability targets against logits."""
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


# -- Wasserstein GAN with gradient penalty (ClusterGAN) ------------------------------
def wasserstein_critic_loss(real_scores, fake_scores):
    """[B] WGAN critic loss, minimised: D(fake) - D(real) (real scores high).

    Real and fake are paired by position; the mean over the batch is the usual
    E D(G(z)) - E D(x)."""
    return fake_scores - real_scores


def wasserstein_generator_loss(fake_scores):
    """[B] WGAN generator loss, minimised: -D(G(z))."""
    return -fake_scores


def interpolate_samples(real, fake, epsilon):
    """x_hat = eps * real + (1 - eps) * fake, with `epsilon` [B] broadcast over the
    sample axes (one epsilon per example)."""
    epsilon = tf.reshape(tf.cast(epsilon, real.dtype), [-1] + [1] * (len(real.shape) - 1))
    return epsilon * real + (1.0 - epsilon) * fake


def gradient_penalty(critic, real, fake, epsilon):
    """[B] WGAN-GP penalty (||grad_x critic(x_hat)||_2 - 1)^2 per example (Gulrajani
    et al. 2017), unweighted, at x_hat = eps * real + (1 - eps) * fake.

    `critic` maps a batch to scores [B] or [B, 1] with no interaction between examples
    (no batch norm), so the gradient of the summed scores holds every example's own
    gradient. `epsilon` [B] ~ U(0, 1) must be drawn PER EXAMPLE. Call this inside the
    caller's GradientTape: the penalty's gradient w.r.t. the critic's weights is a
    second-order gradient through this inner tape.
    """
    x_hat = interpolate_samples(real, tf.stop_gradient(fake), epsilon)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        scores = critic(x_hat)
    grads = tape.gradient(scores, x_hat)
    axes = list(range(1, len(grads.shape)))
    # The tiny constant keeps the gradient of the norm finite where grads == 0.
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=axes) + 1e-12)
    return tf.square(norm - 1.0)
