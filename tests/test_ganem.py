"""GAN-EM model: configuration, losses, and what each training phase touches."""

import numpy as np
import pytest
import tensorflow as tf

from zoo import losses
from zoo.ganem import GANEM


def small_model(**kwargs):
    model = GANEM((8, 8, 1), 3, latent_dim=5, e_batch_size=6, seed=1, **kwargs)
    model.compile()
    return model


def test_conv_networks_for_mnist_shapes():
    model = GANEM((28, 28, 1), 10)
    assert model.generator.output_shape == (None, 28, 28, 1)
    assert any(isinstance(layer, tf.keras.layers.Conv2DTranspose) or "Conv2DTranspose" in type(layer).__name__
               for layer in model.generator.layers)
    assert model.cluster_probs(tf.zeros((2, 28, 28, 1))).shape == (2, 10)
    assert model.embed(tf.zeros((2, 28, 28, 1))).shape == (2, 1024)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_clusters"):
        GANEM((8, 8, 1), 1)
    with pytest.raises(ValueError, match="generator_loss"):
        GANEM((8, 8, 1), 3, generator_loss="wasserstein")


def test_discriminator_loss_matches_formula():
    real_logits = np.array([[0.5, -1.0], [2.0, 0.1]], np.float32)
    weights = np.array([[0.25, 0.75], [1.0, 0.0]], np.float32)
    fake_logits = np.array([[0.3, -0.2], [-1.5, 1.0]], np.float32)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    real, fake = losses.multihead_discriminator_loss(real_logits, weights, fake_logits)
    np.testing.assert_allclose(real, -(weights * np.log(sig(real_logits))).sum(1), rtol=1e-5)
    np.testing.assert_allclose(fake, -np.log(1 - sig(fake_logits)).sum(1), rtol=1e-5)


def test_mle_generator_loss_clips_value_and_keeps_bounded_gradient():
    logits = tf.constant([0.0, 2.0, 50.0])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.mle_generator_loss(logits, logit_clip=3.0)
    grad = tape.gradient(loss, logits).numpy()
    np.testing.assert_allclose(loss.numpy(), [-0.5, -0.5 * np.exp(2.0), -0.5 * np.exp(3.0)], rtol=1e-5)
    assert np.all(np.isfinite(grad)) and grad[2] == pytest.approx(-0.5 * np.exp(3.0), rel=1e-5)


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def test_m_step_trains_generator_and_discriminator_only():
    model = small_model()
    before = {name: [v.numpy().copy() for v in getattr(model, name).trainable_variables]
              for name in ("generator", "discriminator", "enet")}
    x = tf.random.uniform((6, 8, 8, 1), seed=0)
    w = tf.one_hot([0, 1, 2, 0, 1, 2], 3)
    out = tf.function(model.m_step)((x, w))
    assert all(np.isfinite(float(v)) for v in out.values())
    changed = {name: any(not np.allclose(a, b.numpy()) for a, b in zip(vals, getattr(model, name).trainable_variables))
               for name, vals in before.items()}
    assert changed == {"generator": True, "discriminator": True, "enet": False}


def test_e_step_trains_enet_only_and_learns_generated_clusters():
    model = GANEM((8, 8, 1), 3, latent_dim=5, e_batch_size=32, seed=1)
    model.compile(e_optimizer=tf.keras.optimizers.Adam(3e-3))
    # Make the (untrained) generator's output depend clearly on the cluster code.
    fc1 = model.generator.get_layer("fc1").kernel
    fc1.assign(tf.concat([fc1[:5], 20.0 * fc1[5:]], axis=0))
    g_before = [v.numpy().copy() for v in model.generator.trainable_variables]
    step = tf.function(model.e_step)
    outs = [step() for _ in range(300)]
    accuracy, loss = [float(o["e_acc_fake"]) for o in outs], [float(o["e_loss"]) for o in outs]
    assert all(np.allclose(a, b.numpy()) for a, b in zip(g_before, model.generator.trainable_variables))
    # The E-net learns to recover the cluster code of generated samples. An untrained E-net's
    # accuracy on one batch of 32 is luck (0.25-0.69 seen across seeds and CPUs), so learning
    # shows in the loss: from about log 3 down by orders of magnitude (1e-5 seen), asserted
    # with a wide margin, and in the final accuracy.
    assert np.mean(loss[-30:]) < 0.1 * loss[0] and np.mean(accuracy[-30:]) > 0.9


def test_e_step_draws_clusters_from_the_prior():
    model = small_model()
    model.prior.assign([0.0, 0.0, 1.0])
    clusters = model.draw_clusters(500, model.step_seed(0, 4), prior=tf.convert_to_tensor(model.prior))
    assert set(np.unique(clusters.numpy())) == {2}


def test_update_prior_is_mean_posterior_unless_fixed():
    probs = np.array([[1, 0, 0], [0.5, 0.5, 0], [0.6, 0.2, 0.2]], np.float32)
    model = small_model()
    model.update_prior(probs)
    np.testing.assert_allclose(model.prior.numpy(), probs.mean(0), rtol=1e-6)
    fixed = small_model(learn_prior=False)
    fixed.update_prior(probs)
    np.testing.assert_allclose(fixed.prior.numpy(), [1 / 3] * 3, rtol=1e-6)


def test_sample_latent_is_reproducible():
    model = small_model()
    a, b, c = model.sample_latent(4, seed=7), model.sample_latent(4, seed=7), model.sample_latent(4, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    images = model.generate(a, tf.constant([0, 1, 2, 0]))
    assert images.shape == (4, 8, 8, 1)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0


def test_authors_code_variant_has_fake_class_balanced_e_step_and_fixed_prior():
    model = small_model(variant="authors-code")
    assert model.discriminator.output_shape[0] == (None, 4)  # K + 1 with the fake class
    assert not model.learn_prior
    config = model.get_config()
    assert config["variant"] == "authors-code" and GANEM.from_config(config).get_config() == config
    clusters = model.draw_balanced_clusters(30, model.step_seed(0, 4)).numpy()
    assert np.bincount(clusters).tolist() == [10, 10, 10]
    out = tf.function(model.m_step)((tf.random.uniform((6, 8, 8, 1)), tf.one_hot([0, 1, 2, 0, 1, 2], 3)))
    assert all(np.isfinite(float(v)) for v in out.values())
    with pytest.raises(ValueError, match="variant"):
        GANEM((8, 8, 1), 3, variant="pytorch")


def test_fake_class_discriminator_loss_matches_formula():
    real_logits = np.array([[1.0, 0.0, -1.0]], np.float32)  # K = 2, plus the fake class
    fake_logits = np.array([[0.0, 0.5, 2.0]], np.float32)
    w = np.array([[0.25, 0.75]], np.float32)
    real, fake = losses.fake_class_discriminator_loss(real_logits, w, fake_logits)
    log_softmax = lambda v: v - np.log(np.exp(v).sum())  # noqa: E731
    assert float(real[0]) == pytest.approx(-(w[0] * log_softmax(real_logits[0])[:2]).sum(), rel=1e-5)
    assert float(fake[0]) == pytest.approx(-log_softmax(fake_logits[0])[2], rel=1e-5)
