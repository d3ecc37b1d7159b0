"""KM-GAN: TensorFlow K-Means, the three-step alternation under two replicas, weight
clipping, the reduced (pixel) and unconditional variants, and the trainer's command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from zoo import kmeans, metrics
from zoo.data import load_dataset
from zoo.kmgan import KMGAN


def blobs(n=300, k=4, seed=0, scale=10.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=scale, size=(k, 5))
    y = np.arange(n) % k
    return (means[y] + rng.normal(size=(n, 5))).astype(np.float32), y


def test_kmeans_plus_plus_seeds_one_center_per_blob():
    x, y = blobs()
    centers = kmeans.kmeans_plus_plus(x, 4, tf.constant([0, 1], tf.int64)).numpy()
    labels, _ = kmeans.assign(x, centers)
    assert metrics.cluster_accuracy(y, labels.numpy()) == 1.0
    again = kmeans.kmeans_plus_plus(x, 4, tf.constant([0, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(centers, again)  # stateless: same seed, same centers


def test_fit_keeps_the_lowest_inertia_of_several_seedings():
    # Eight blobs close enough that a k-means++ seeding often puts two centers in one blob and
    # Lloyd stays in that local minimum (ACC about 0.82). Which seedings do is one draw's luck,
    # so each seeding is run here too and fit must return the best of them.
    x, y = blobs(n=600, k=8, seed=1, scale=4.0)
    seed = tf.constant([2, 1], tf.int64)
    runs = []
    for restart in range(5):
        start = kmeans.kmeans_plus_plus(x, 8, seed + tf.constant([0, 104729], tf.int64) * restart)
        _, labels, inertia = kmeans.lloyd(x, start, 10)
        runs.append((float(inertia), labels.numpy()))
    once = kmeans.fit(x, 8, seed, iterations=10, restarts=1)[1].numpy()
    best = kmeans.fit(x, 8, seed, iterations=10, restarts=5)[1].numpy()
    assert metrics.cluster_accuracy(runs[0][1], once) == 1.0  # restarts=1 is the first seeding
    lowest = min(inertia for inertia, _ in runs)
    # The same partition as a seeding of the lowest inertia (ties within rounding are equals).
    assert any(metrics.cluster_accuracy(labels, best) == 1.0 for inertia, labels in runs
               if inertia <= lowest * (1 + 1e-5))
    np.testing.assert_array_equal(best, kmeans.fit(x, 8, seed, iterations=10, restarts=5)[1].numpy())


def test_minibatch_update_moves_centers_by_one_over_count():
    centers, counts = tf.constant([[0.0, 0.0], [10.0, 10.0]]), tf.constant([3.0, 0.0])
    sums, batch_counts = tf.constant([[4.0, 4.0], [0.0, 0.0]]), tf.constant([1.0, 0.0])
    new, new_counts = kmeans.minibatch_update(centers, counts, sums, batch_counts)
    np.testing.assert_allclose(new.numpy(), [[1.0, 1.0], [10.0, 10.0]])  # 0 + (4 - 0) / 4; untouched
    np.testing.assert_allclose(new_counts.numpy(), [4.0, 0.0])


def test_nearest_center_clusters():
    model = KMGAN((5,), 4, latent_dim=3, feature_dim=6, space="pixel", conditional=False, clip=0.1,
                  margin=0.5, seed=3)
    x, y = blobs()
    model.init_centers(x)
    probs = model.cluster_probs(x).numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert metrics.cluster_accuracy(y, probs.argmax(1)) > 0.95  # pixel K-Means on separated blobs
    z = model.sample_latent(4)
    np.testing.assert_allclose(model.generate(z, tf.constant([0, 1, 2, 3])), model.generate(z, tf.zeros(4, tf.int32)))


def test_two_replicas_keep_identical_centers_and_clipped_weights(two_cpu_strategy):
    from trainers import common

    data = load_dataset("synthetic:clusters=4,samples=400")
    with two_cpu_strategy.scope():
        model = KMGAN(data.input_shape, 4, latent_dim=4, feature_dim=8, clip=0.05, seed=1)
        model.compile()
    model.init_centers(data.x)
    step = common.replicated_step(two_cpu_strategy, model.alternation_step)
    batches = common.distributed_batches(two_cpu_strategy, (data.x,), 32, 0)
    before = model.centers.numpy().copy()
    for _ in range(3):
        out = step(batches)
    assert all(np.isfinite(float(v)) for v in out.values())
    replicas = [v.numpy() for v in two_cpu_strategy.experimental_local_results(model.centers.value)]
    np.testing.assert_array_equal(replicas[0], replicas[1])
    assert not np.allclose(replicas[0], before)  # step 3 of the alternation moved them
    for weight in model.discriminator.trainable_variables:
        assert np.abs(weight.numpy()).max() <= 0.05 + 1e-7



def _start(args):
    """--init none unless a test gives --init: these tests are of the paper's mechanics, and a
    UMAP start would cost its compile time in every process."""
    return () if "--init" in args else ("--init", "none")


def run_trainer(*args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "trainers.kmgan", *args, *_start(args)], capture_output=True,
                          text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_command_line_on_synthetic_four_clusters(tmp_path):
    run_dir = tmp_path / "run"
    result = run_trainer("--dataset", "synthetic:clusters=4,samples=2000", "--clusters", "4", "--iterations", "40",
                         "--batch-size", "32", "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics_ = json.loads((run_dir / "metrics.json").read_text())
    assert metrics_["steps"] == 40 and metrics_["acc"] > 0.9
    assert set(metrics_["judge"]) >= {"fd_classifier", "quality", "diversity", "class_histogram"}
    assert (run_dir / "features.png").stat().st_size > 0
    assert (run_dir / "generated_classes.png").stat().st_size > 0
    assert (run_dir / "export" / "kmgan_enet" / "1" / "saved_model.pb").exists()


@pytest.mark.slow  # 2,000 steps: about 30 s on 2 cores
def test_four_gaussians_stay_four_clusters_for_a_whole_run(tmp_path):
    # Before the harmonic-mean spread and the seeding restarts, two blobs merged after
    # 1,000-1,500 steps with seeds 0 and 1 (final ACC 0.75 and 0.71).
    for seed in ("0", "1"):
        run_dir = tmp_path / f"run{seed}"
        result = run_trainer("--dataset", "synthetic:clusters=4", "--clusters", "4", "--seed", seed, "--iterations",
                             "2000", "--run-dir", str(run_dir), "--quiet", "--no-export", "--score-samples", "0")
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((run_dir / "metrics.json").read_text())
        assert report["steps"] == 2000
        assert min(h["acc"] for h in report["history"]) > 0.95, report["history"]


@pytest.mark.parametrize("flag, value", [("--clip", "-1"), ("--margin", "0"), ("--iterations", "0"),
                                         ("--init-restarts", "0")])
def test_bad_flags_are_one_line_with_exit_code_2(tmp_path, flag, value):
    result = run_trainer("--dataset", "digits", flag, value, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"trainers.kmgan: error: {flag}")
