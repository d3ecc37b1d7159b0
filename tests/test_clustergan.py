"""ClusterGAN: configuration, the WGAN-GP penalty, what each step trains, two-replica
equivalence, latent interpolation, export, and the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from zoo import losses
from zoo.clustergan import ClusterGAN, interpolate, interpolation_grid, interpolation_pairs

SHAPE = (8, 8, 1)  # small images: MLP networks, fast


def small_model(**kwargs):
    model = ClusterGAN(SHAPE, 3, latent_dim=4, g_batch_size=6, seed=1, **kwargs)
    model.compile()
    return model


def _trainables(model):
    return {name: [v.numpy().copy() for v in getattr(model, name).trainable_variables]
            for name in ("generator", "critic", "encoder")}


def _changed(model, before):
    return {name: any(not np.allclose(a, b.numpy()) for a, b in zip(values, getattr(model, name).trainable_variables))
            for name, values in before.items()}


# -- the model ------------------------------------------------------------------------------
def test_bad_arguments():
    for kwargs, match in (({"zn_loss": "l1"}, "zn_loss"), ({"n_critic": 0}, "n_critic"),
                          ({"sigma": 0.0}, "sigma"), ({"gp_weight": -1.0}, "gp_weight")):
        with pytest.raises(ValueError, match=match):
            ClusterGAN(SHAPE, 3, **kwargs)
    with pytest.raises(ValueError, match="num_clusters"):
        ClusterGAN(SHAPE, 1)


def test_networks_and_common_surface():
    model = small_model()
    # Critic: one output and no batch norm anywhere (it would break the per-example penalty).
    assert model.critic.output_shape[0] == (None, 1)
    assert not [layer for layer in model.critic._flatten_layers() if "BatchNormalization" in type(layer).__name__]
    assert model.encoder.output_shape[0] == (None, 4 + 3)
    x = tf.random.uniform((5, *SHAPE), seed=0)
    probs = model.cluster_probs(x).numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    code = model.embed(x).numpy()
    assert code.shape == (5, 4 + 3) and model.embedding_size == 7
    np.testing.assert_allclose(code[:, 4:], probs, rtol=1e-5, atol=1e-6)  # E(x) = (E_n(x), E_c(x))
    # sample_latent: sigma * N(0, I), reproducible with a tensor seed.
    z = model.sample_latent(4000, seed=tf.constant(7, tf.int64)).numpy()
    assert z.shape == (4000, 4) and abs(z.std() - 0.1) < 0.005
    np.testing.assert_array_equal(z[:3], model.sample_latent(3, seed=7))
    assert not np.allclose(z[:3], model.sample_latent(3, seed=8))
    assert model.generate(z[:3], tf.constant([0, 1, 2])).shape == (3, *SHAPE)


# -- the gradient penalty ---------------------------------------------------------------------
def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared():
    """critic(x) = w.x has gradient w everywhere: the penalty is (|w| - 1)^2 whatever the
    interpolation point, and its gradient w.r.t. w is 2 (|w| - 1) w / |w|."""
    rng = np.random.default_rng(0)
    w = tf.Variable(rng.normal(size=(6,)).astype(np.float32))
    real, fake = rng.uniform(size=(4, 6)).astype(np.float32), rng.uniform(size=(4, 6)).astype(np.float32)
    epsilon = tf.constant([0.0, 0.3, 0.7, 1.0])
    with tf.GradientTape() as tape:
        penalty = losses.gradient_penalty(lambda x: tf.linalg.matvec(x, w), real, fake, epsilon)
        loss = 10.0 * tf.reduce_mean(penalty)
    norm = np.linalg.norm(w.numpy())
    np.testing.assert_allclose(penalty, np.full(4, (norm - 1) ** 2), rtol=1e-5)
    assert float(loss) == pytest.approx(10.0 * (norm - 1) ** 2, rel=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, w), 10.0 * 2 * (norm - 1) * w.numpy() / norm, rtol=1e-4)


def test_gradient_penalty_interpolates_per_example():
    """critic(x) = |x|^2 / 2 has gradient x: the penalty of example i is (|x_hat_i| - 1)^2
    with x_hat_i = eps_i real_i + (1 - eps_i) fake_i, its own epsilon."""
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(3, 2, 2, 1)).astype(np.float32), rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
    epsilon = np.array([0.1, 0.5, 0.9], np.float32)
    penalty = losses.gradient_penalty(lambda x: 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3]), real, fake, epsilon)
    x_hat = epsilon[:, None, None, None] * real + (1 - epsilon[:, None, None, None]) * fake
    expected = (np.linalg.norm(x_hat.reshape(3, -1), axis=1) - 1) ** 2
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)


def test_wasserstein_losses():
    real, fake = tf.constant([1.0, 2.0]), tf.constant([0.5, -1.0])
    np.testing.assert_allclose(losses.wasserstein_critic_loss(real, fake), [-0.5, -3.0])
    np.testing.assert_allclose(losses.wasserstein_generator_loss(fake), [-0.5, 1.0])


def test_critic_step_draws_one_epsilon_per_example(monkeypatch):
    seen = {}
    original = losses.gradient_penalty

    def spy(critic, real, fake, epsilon):
        seen["epsilon"] = epsilon.numpy()
        return original(critic, real, fake, epsilon)

    monkeypatch.setattr(losses, "gradient_penalty", spy)
    small_model().critic_step((tf.random.uniform((6, *SHAPE), seed=2),))  # eager
    assert seen["epsilon"].shape == (6,) and len(np.unique(seen["epsilon"])) == 6
    assert np.all((seen["epsilon"] >= 0) & (seen["epsilon"] <= 1))


# -- what each step trains --------------------------------------------------------------------
def test_critic_step_trains_the_critic_only():
    model = small_model()
    before = _trainables(model)
    out = tf.function(model.critic_step)(tf.random.uniform((6, *SHAPE), seed=0))  # a bare x works too
    assert set(out) == {"d_loss", "w_distance", "gp"} and all(np.isfinite(float(v)) for v in out.values())
    assert _changed(model, before) == {"generator": False, "critic": True, "encoder": False}
    assert int(model.d_optimizer.iterations.numpy()) == 1 and int(model.g_optimizer.iterations.numpy()) == 0


def test_generator_step_trains_generator_and_encoder_not_the_critic():
    model = small_model()
    before = _trainables(model)
    out = tf.function(model.generator_step)()
    assert all(np.isfinite(float(v)) for v in out.values())
    assert _changed(model, before) == {"generator": True, "critic": False, "encoder": True}
    # g_loss = adversarial + beta_n ||z_n - E_n||^2 + beta_c CE, all means over the batch.
    expected = float(out["g_adv"]) + 10.0 * float(out["zn_loss"]) + 10.0 * float(out["c_loss"])
    assert float(out["g_loss"]) == pytest.approx(expected, rel=1e-5)


def test_zn_loss_mean_is_sum_over_latent_dim():
    a, b = small_model(), small_model(zn_loss="mean")
    b.set_weights(a.get_weights())
    assert float(b.generator_step()["zn_loss"]) == pytest.approx(
        float(a.generator_step()["zn_loss"]) / 4, rel=1e-5)


# -- interpolation and export --------------------------------------------------------------------
def test_interpolation_runs_from_one_cluster_code_to_another():
    model = small_model()
    path = interpolate(model, 0, 2, steps=5, seed=3)
    assert path.shape == (5, *SHAPE)
    z = model.sample_latent(1, seed=3)
    np.testing.assert_allclose(path[0], model.generate(z, tf.constant([0]))[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(path[-1], model.generate(z, tf.constant([2]))[0], rtol=1e-5, atol=1e-6)
    assert interpolation_pairs(10) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert interpolation_pairs(3) == [(0, 1), (2, 0)]
    assert interpolation_grid(model, [(0, 1), (1, 2)], steps=3).shape == (2, 3, *SHAPE)
    with pytest.raises(ValueError, match="cluster ids"):
        interpolate(model, 0, 3)


# -- the command line -----------------------------------------------------------------------------

def _start(args):
    """--init none unless a test gives --init: these tests are of the paper's mechanics, and a
    UMAP start would cost its compile time in every process."""
    return () if "--init" in args else ("--init", "none")


def run_clustergan(*args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "trainers.clustergan", *args, *_start(args)], capture_output=True,
                          text=True,
                          timeout=timeout, env=env)


METRIC_KEYS = ("acc", "nmi", "ari", "purity", "kmeans_acc", "argmax_acc")


def _check_run(run_dir, result, steps):
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "clustergan" and metrics["steps"] == steps
    for key in METRIC_KEYS:
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, key
    for servable in ("clustergan_enet", "clustergan_generator"):
        assert (run_dir / "export" / servable / "1" / "saved_model.pb").exists()
    return metrics


def test_cli_on_digits_leaves_figures_history_and_export(tmp_path):
    run_dir = tmp_path / "run"
    # 3 generator iterations of 2 critic + 1 G/E updates, evaluated after each.
    result = run_clustergan("--dataset", "digits", "--n-critic", "2", "--iterations", "3", "--eval-every", "1",
                            "--batch-size", "32", "--cluster-by", "kmeans", "--run-dir", str(run_dir), "--quiet")
    metrics = _check_run(run_dir, result, steps=9)
    assert metrics["cluster_by"] == "kmeans" and metrics["acc"] == metrics["kmeans_acc"]
    assert [h["generator_step"] for h in metrics["history"]] == [1, 2, 3]
    assert "k-means ACC" in result.stdout and "ACC" in result.stdout
    for name in ("samples.png", "interpolation.png", "confusion.png"):
        assert (run_dir / name).stat().st_size > 0


@pytest.mark.slow
def test_cli_on_synthetic_vectors_with_max_steps(tmp_path):
    run_dir = tmp_path / "run"
    result = run_clustergan("--dataset", "synthetic:samples=600", "--max-steps", "8", "--run-dir", str(run_dir),
                            "--quiet")
    metrics = _check_run(run_dir, result, steps=8)
    assert metrics["cluster_by"] == "argmax" and metrics["acc"] == metrics["argmax_acc"]
    assert metrics["generator_steps_done"] == 1  # 5 critic + 1 G/E, then 2 critic updates


def test_help_lists_the_clustergan_flags():
    result = run_clustergan("--help")
    assert result.returncode == 0
    for flag in ("--dataset", "--max-steps", "--n-critic", "--latent-dim", "--sigma", "--beta-n", "--beta-c",
                 "--gp-weight", "--lr-g", "--lr-d", "--lr-e", "--cluster-by", "--eval-every", "--iterations"):
        assert flag in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--n-critic", "0"], "--n-critic must be positive"),
    (["--clusters", "1"], "--clusters must be at least 2"),
    (["--labels", "10"], "unsupervised"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, expected):
    result = run_clustergan("--dataset", "digits", "--run-dir", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr
