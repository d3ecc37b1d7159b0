"""GM-GAN: the mixture latent (seeded means, dynamic/static), what each step trains, the
supervised variant, two-replica equivalence, the sampling scale in `generate` and in the
exported `sample` signature, the scale curve, and the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from trainers import common
from trainers.gmgan import schedule
from zoo.gmgan import GMGAN, SCALES, scale_curve

SHAPE = (8, 8, 1)  # small images: MLP networks, fast


def small_model(**kwargs):
    kwargs = {"latent_dim": 4, "e_batch_size": 6, "seed": 1, **kwargs}
    model = GMGAN(SHAPE, 3, **kwargs)
    model.compile()
    return model


def _snapshot(model):
    parts = {"generator": model.generator.trainable_variables, "discriminator": model.discriminator.trainable_variables,
             "enet": model.enet.trainable_variables, "mixture": [model.means, model.log_sigmas]}
    return {name: [v.numpy().copy() for v in vs] for name, vs in parts.items()}, parts


def _changed(before, parts):
    return {name: any(not np.allclose(a, b.numpy()) for a, b in zip(before[name], parts[name])) for name in before}


# -- the mixture -------------------------------------------------------------------------------
def test_means_come_from_the_seed():
    model = GMGAN((6,), 4, latent_dim=5, seed=3)
    np.testing.assert_array_equal(GMGAN.from_config(model.get_config()).means.numpy(), model.means.numpy())


def test_bad_arguments():
    for kwargs, match in (({"latent": "learned"}, "latent"), ({"sigma": 0.0}, "sigma"),
                          ({"mean_range": -1.0}, "mean_range"), ({"latent_dim": 0}, "latent_dim")):
        with pytest.raises(ValueError, match=match):
            GMGAN(SHAPE, 3, **kwargs)


def test_means_are_seeded_uniform_and_sigma_starts_as_given():
    a, b, c = (GMGAN(SHAPE, 5, latent_dim=50, seed=seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(a.means.numpy(), b.means.numpy())
    assert not np.allclose(a.means.numpy(), c.means.numpy())
    means = GMGAN(SHAPE, 5, latent_dim=50, mean_range=0.5, seed=7).means.numpy()
    assert means.shape == (5, 50) and np.all(np.abs(means) <= 0.5) and means.std() > 0.2
    np.testing.assert_allclose(a.sigmas().numpy(), np.full(5, 1.0), rtol=1e-6)
    # dynamic: mu and sigma are trainable and trained by G's optimizer; static: neither.
    assert a.means.trainable and a.log_sigmas.trainable and len(a.generator_variables) == len(
        a.generator.trainable_variables) + 2
    static = GMGAN(SHAPE, 5, latent="static")
    assert not static.means.trainable and static.generator_variables == static.generator.trainable_variables


def test_latent_code_is_mean_plus_scaled_sigma_times_noise():
    model = small_model(sigma=0.3)
    eps = model.sample_latent(6, seed=2).numpy()
    c = np.array([0, 1, 2, 2, 1, 0])
    z = model.latent_code(eps, c, scale=1.5).numpy()
    np.testing.assert_allclose(z, model.means.numpy()[c] + 1.5 * 0.3 * eps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.latent_code(eps, c, scale=0.0), model.means.numpy()[c], atol=1e-7)


def test_common_surface_and_scale_controls_the_spread():
    model = small_model()
    x = tf.random.uniform((5, *SHAPE), seed=0)
    probs = model.cluster_probs(x).numpy()
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert model.embed(x).shape[0] == 5
    eps, c = model.sample_latent(40, seed=3), tf.zeros(40, tf.int32)
    spread = {s: model.generate(eps, c, scale=s).numpy().std(axis=0).mean() for s in (0.0, 0.5, 2.0)}
    assert spread[0.0] < 1e-6 < spread[0.5] < spread[2.0]
    np.testing.assert_allclose(model.generate(eps, c), model.generate(eps, c, scale=1.0))  # default scale 1


# -- what each step trains ---------------------------------------------------------------------
@pytest.mark.parametrize("latent", ["dynamic", "static"])
def test_gan_step_trains_d_and_g_and_the_mixture_only_when_dynamic(latent):
    model = small_model(latent=latent)
    before, parts = _snapshot(model)
    out = tf.function(model.gan_step)(tf.random.uniform((6, *SHAPE), seed=0))
    assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake", "sigma"}
    assert all(np.isfinite(float(v)) for v in out.values())
    assert _changed(before, parts) == {"generator": True, "discriminator": True, "enet": False,
                                       "mixture": latent == "dynamic"}
    assert int(model.d_optimizer.iterations.numpy()) == 1 and int(model.g_optimizer.iterations.numpy()) == 1


def test_enet_step_learns_the_component_of_generated_samples():
    model = small_model(e_batch_size=30)
    # The loss on one fixed set of generated samples, not on each step's own batch: a single
    # batch's loss moves by more than 60 slow steps lower it (seen: 1.10 -> 1.09 on one seed).
    c = tf.constant(np.arange(300) % 3)
    x = model.generate(model.sample_latent(300, seed=123), c)

    def held_out_loss():
        probs = model.cluster_probs(x).numpy()
        return float(-np.mean(np.log(probs[np.arange(300), c.numpy()] + 1e-12)))

    before_loss = held_out_loss()
    before, parts = _snapshot(model)
    step = tf.function(model.e_step)
    step()
    assert _changed(before, parts) == {"generator": False, "discriminator": False, "enet": True, "mixture": False}
    for _ in range(60):
        step()
    # Components apart in latent space give distinguishable samples even from an untrained G:
    # the loss drops by 0.045-0.09 over eight seeds; asserted with half the smallest drop.
    assert held_out_loss() < before_loss - 0.02


def test_supervised_discriminator_judges_each_class_with_its_own_head():
    model = small_model(supervised=True)
    assert model.discriminator.output_shape[0] == (None, 3)
    x = tf.random.uniform((6, *SHAPE), seed=0)
    y = tf.constant([0, 1, 2, 0, 1, 2])
    logits, _ = model.discriminator(x)
    np.testing.assert_allclose(model._judge(x, y, training=False), logits.numpy()[np.arange(6), y.numpy()],
                               rtol=1e-5)
    out = tf.function(model.gan_step)((x, y))
    assert all(np.isfinite(float(v)) for v in out.values())
    assert GMGAN(SHAPE, 3).discriminator.output_shape[0] == (None, 1)  # unsupervised: unconditional D


# -- two replicas ------------------------------------------------------------------------------
GLOBAL_BATCH = 8


def _build_sgd(strategy, supervised):
    with strategy.scope():
        model = GMGAN(SHAPE, 3, latent_dim=4, e_batch_size=GLOBAL_BATCH, supervised=supervised, seed=4)
        # Plain SGD: an update proportional to the gradient shows wrong replica scaling.
        model.compile(g_optimizer=tf.keras.optimizers.SGD(0.05), d_optimizer=tf.keras.optimizers.SGD(0.05),
                      e_optimizer=tf.keras.optimizers.SGD(0.05))
    return model


def test_two_replicas_match_one_replica_in_the_supervised_variant(two_cpu_strategy):
    # The unsupervised model is checked with every model's in tests/test_every_model.py.
    supervised = True
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    single, mirrored = _build_sgd(one, supervised), _build_sgd(two_cpu_strategy, supervised)
    mirrored.set_weights(single.get_weights())
    rng = np.random.default_rng(0)
    arrays = (rng.uniform(size=(GLOBAL_BATCH * 3, *SHAPE)).astype(np.float32),
              rng.integers(0, 3, GLOBAL_BATCH * 3).astype(np.int32))
    arrays = arrays if supervised else arrays[:1]

    def batches(strategy):
        return iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(arrays)
                                                             .batch(GLOBAL_BATCH)))

    gan = [common.replicated_step(s, m.gan_step) for s, m in ((one, single), (two_cpu_strategy, mirrored))]
    enet = [common.replicated_step(s, m.e_step) for s, m in ((one, single), (two_cpu_strategy, mirrored))]
    its = [batches(one), batches(two_cpu_strategy)]
    for _ in range(2):
        for a, b in ((gan[0](its[0]), gan[1](its[1])), (enet[0](), enet[1]())):
            for key in a:
                np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-4, atol=1e-5, err_msg=key)
    for x, y in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)


# -- scale curve and export -------------------------------------------------------------------
class _FakeReference:
    """Scores by a fixed rule, so the curve's bookkeeping is tested without training a classifier."""

    def scores(self, generated, real):
        spread = float(np.asarray(generated).std(axis=0).mean())
        return {"quality": 1.0 / (1.0 + spread), "diversity": spread, "fd_classifier": spread,
                "class_histogram": [1.0]}


def test_scale_curve_has_every_scale_and_balanced_samples():
    model = small_model()
    samples = model.balanced_samples(9, seed=1, scale=0.0)
    assert samples.shape == (9, *SHAPE)
    np.testing.assert_allclose(samples[0], samples[3], atol=1e-6)  # same component at s = 0: the same image
    curve = scale_curve(model, _FakeReference(), None, n=30)
    assert [p["scale"] for p in curve] == list(SCALES)
    diversity = [p["diversity"] for p in curve]
    assert diversity == sorted(diversity)  # a larger s spreads the samples more


def test_exported_sample_signature_takes_scale(tmp_path):
    from export import export_servables
    from export.savedmodel import GeneratorServable
    from zoo.ganem import GANEM

    model = small_model()
    paths = export_servables(model, tmp_path, metadata={"dataset": "unit-test"})
    generator = tf.saved_model.load(str(paths["gmgan_generator"]))
    sample = generator.signatures["sample"]
    assert set(sample.structured_input_signature[1]) == {"cluster", "seed", "scale"}
    cluster, seed = tf.constant([1] * 20, tf.int64), tf.constant(5, tf.int64)
    spread = {s: sample(cluster=cluster, seed=seed, scale=tf.constant(s))["images"].numpy().std(axis=0).mean()
              for s in (0.0, 0.5, 2.0)}
    assert spread[0.0] < 1e-6 < spread[0.5] < spread[2.0]
    noise = model.sample_latent(20, seed=5)
    np.testing.assert_allclose(sample(cluster=cluster, seed=seed, scale=tf.constant(0.5))["images"],
                               model.generate(noise, tf.constant([1] * 20), scale=0.5), rtol=1e-5, atol=1e-6)
    default = generator.signatures["serving_default"](noise=noise, cluster=cluster)["images"]
    np.testing.assert_allclose(default, model.generate(noise, tf.constant([1] * 20)), rtol=1e-5, atol=1e-6)
    enet = tf.saved_model.load(str(paths["gmgan_enet"])).signatures["serving_default"]
    images = tf.random.uniform((4, *SHAPE), seed=5)
    np.testing.assert_allclose(enet(images=images)["probabilities"], model.cluster_probs(images), rtol=1e-5, atol=1e-6)
    # Models without a scale keep the two-input `sample` signature.
    other = GANEM(SHAPE, 3, latent_dim=4)
    assert len(GeneratorServable(other).sample.input_signature) == 2


# -- the command line ---------------------------------------------------------------------------
def test_schedule_interleaves_enet_updates_then_runs_the_final_ones():
    phases = [schedule(step, 5, 2) for step in range(10)]
    assert phases == [("gan", 0), ("gan", 1), ("enet", 2), ("gan", 2), ("gan", 3), ("enet", 4), ("gan", 4),
                      ("enet", 5), ("enet", 5), ("enet", 5)]
    assert [schedule(step, 3, 0) for step in range(4)] == [("gan", 0), ("gan", 1), ("gan", 2), ("enet", 3)]



def _start(args):
    """--init none unless a test gives --init: these tests are of the paper's mechanics, and a
    UMAP start would cost its compile time in every process."""
    return () if "--init" in args else ("--init", "none")


def run_gmgan(*args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "trainers.gmgan", *args, *_start(args)], capture_output=True,
                          text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_cli_on_digits_leaves_scores_curve_figures_history_and_export(tmp_path):
    run_dir = tmp_path / "run"
    # 4 GAN iterations with an E-net update after every 2, then 2 final E-net updates.
    result = run_gmgan("--dataset", "digits", "--iterations", "4", "--final-enet-steps", "2", "--eval-every", "2",
                       "--batch-size", "32", "--score-samples", "100", "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "gmgan" and metrics["steps"] == 8 and metrics["gan_steps_done"] == 4
    for key in ("acc", "nmi", "ari", "quality", "diversity"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["fd_classifier"] >= 0.0
    assert [p["scale"] for p in metrics["scale_curve"]] == list(SCALES)
    assert [h["gan_step"] for h in metrics["history"]] == [2, 4]
    for name in ("samples.png", "scale_samples.png", "scale_curve.png", "confusion.png"):
        assert (run_dir / name).stat().st_size > 0
    for servable in ("gmgan_enet", "gmgan_generator"):
        assert (run_dir / "export" / servable / "1" / "saved_model.pb").exists()
    assert "quality:" in result.stdout and "diversity:" in result.stdout


@pytest.mark.slow
def test_cli_supervised_on_synthetic_vectors(tmp_path):
    run_dir = tmp_path / "run"
    result = run_gmgan("--dataset", "synthetic:samples=600", "--clusters", "10", "--supervised", "--latent", "static",
                       "--max-steps", "6", "--score-samples", "0", "--no-export", "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["supervised"] is True and metrics["latent"] == "static" and metrics["steps"] == 6
    assert "quality" not in metrics  # --score-samples 0


@pytest.mark.slow  # XLA compilation alone takes most of a minute on 2 cores
def test_cli_with_jit_and_bfloat16_exports_float32(tmp_path):
    run_dir = tmp_path / "run"
    result = run_gmgan("--dataset", "digits", "--iterations", "2", "--final-enet-steps", "1", "--jit",
                       "--mixed-precision", "bfloat16", "--score-samples", "0", "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    generator = tf.saved_model.load(str(run_dir / "export" / "gmgan_generator" / "1")).signatures["sample"]
    images = generator(cluster=tf.constant([0, 1], tf.int64), seed=tf.constant(1, tf.int64),
                       scale=tf.constant(0.5))["images"]
    assert images.dtype == tf.float32 and images.shape == (2, 8, 8, 1)


@pytest.mark.parametrize("args, expected", [
    (["--iterations", "0"], "--iterations must be positive"),
    (["--enet-scale", "0"], "--enet-scale must be positive"),
    (["--labels", "10"], "--supervised"),
    (["--supervised", "--clusters", "5"], "--clusters must equal the number of classes"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, expected):
    result = run_gmgan("--dataset", "digits", "--run-dir", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr
