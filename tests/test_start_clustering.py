"""The start clustering that ClusterGAN, GM-GAN and KM-GAN learn from by default (not their
papers): the confident subset, what each model's step does with pseudo-labelled real data,
the trainers' --init / --pseudo-labels / --paper flags, and a bounded run of each."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import baselines
from zoo.clustergan import ClusterGAN
from zoo.gmgan import GMGAN
from zoo.kmgan import KMGAN

SHAPE = (8, 8, 1)  # small images: MLP networks, fast


def two_kinds(n=48, seed=0):
    """n 8x8 images of two visibly different kinds (top half bright or not), labels 0/1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.4, (n, *SHAPE)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, :4] += 0.6
    return x, y


# -- the confident subset --------------------------------------------------------------------------
def test_confident_subset_takes_each_clusters_most_confident_fraction():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=200).astype(np.float32)
    cluster, confidence = probs.argmax(1), probs.max(1)
    chosen = baselines.confident_subset(probs, 0.3, exclude=[0, 1, 2])
    assert np.all(np.diff(chosen) > 0) and not set(chosen) & {0, 1, 2}
    for c in range(4):
        members = np.setdiff1d(np.flatnonzero(cluster == c), [0, 1, 2])
        picked = np.intersect1d(chosen, members)
        assert len(picked) == int(np.ceil(0.3 * len(members)))
        left = np.setdiff1d(members, picked)
        if len(left):  # every chosen member is at least as confident as every member left out
            assert confidence[picked].min() >= confidence[left].max()
    assert len(baselines.confident_subset(probs, 1.0)) == 200


def test_start_posteriors_are_distributions_and_names_are_checked():
    x, _ = two_kinds(60)
    for name in ("kmeans", "gmm"):
        probs = baselines.start_posteriors(name, x, 2, seed=0)
        assert probs.shape == (60, 2)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="unknown start"):
        baselines.start_posteriors("spectral", x, 2)


# -- what each model does with pseudo-labelled real data -------------------------------------------
def test_clustergan_encoder_learns_real_pseudo_labels_in_the_joint_step():
    x, y = two_kinds()
    model = ClusterGAN(SHAPE, 2, latent_dim=4, g_batch_size=16, seed=1)
    adam = lambda: keras.optimizers.Adam(1e-3, beta_1=0.5)  # noqa: E731
    model.compile(g_optimizer=adam(), d_optimizer=adam(), e_optimizer=adam())
    real = (tf.constant(x), tf.constant(y, tf.int32))
    step = tf.function(model.generator_step)
    first = float(step(real)["c_loss_real"])
    for _ in range(40):
        last = float(step(real)["c_loss_real"])
    assert "c_loss_real" not in tf.function(model.generator_step)()  # the paper's step
    assert last < 0.5 * first, (first, last)
    hits = np.mean(model.cluster_probs(x).numpy().argmax(1) == y)
    assert hits > 0.9


def test_gmgan_enet_step_adds_the_labelled_real_term():
    x, y = two_kinds()
    model = GMGAN(SHAPE, 2, latent_dim=4, e_batch_size=8, supervised=True, seed=1)
    model.compile()
    out = model.e_step((tf.constant(x), tf.constant(y, tf.int32)))
    assert np.isfinite(float(out["e_loss_labelled"]))
    assert "e_loss_labelled" not in model.e_step()


def test_kmgan_held_clusters_keep_their_centers_and_start_at_class_means():
    x, y = two_kinds()
    y3 = np.zeros_like(y)  # every sample held in cluster 0 of 3: clusters 1, 2 get no members
    model = KMGAN(SHAPE, 3, latent_dim=4, feature_dim=6, reassign_below=0.9, seed=1)
    model.compile()
    model.init_centers(x, labels=y3)
    features = model.features(x).numpy()
    np.testing.assert_allclose(model.centers.numpy()[0], features.mean(0), rtol=1e-4, atol=1e-5)
    idle = model.centers.numpy()[1:].copy()
    step = tf.function(model.alternation_step)
    for _ in range(5):
        out = step((tf.constant(x), tf.constant(y3, tf.int32)))
    assert all(np.isfinite(float(v)) for v in out.values())
    # Without held clusters a center this idle is moved to a far sample; held ones stay.
    np.testing.assert_array_equal(model.centers.numpy()[1:], idle)
    with pytest.raises(ValueError, match="space='feature'"):
        KMGAN(SHAPE, 3, latent_dim=4, feature_dim=6, space="pixel").init_centers(x, labels=y3)


# -- the trainers ----------------------------------------------------------------------------------
def run_trainer(model, *args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", f"trainers.{model}", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


BOUNDED = {"clustergan": ["--iterations", "3", "--n-critic", "1"],
           "gmgan": ["--iterations", "4", "--final-enet-steps", "2", "--score-samples", "0"],
           "kmgan": ["--iterations", "4", "--score-samples", "0"]}


@pytest.mark.parametrize("model", sorted(BOUNDED))
def test_each_trainer_records_its_start_clustering(tmp_path, model):
    run_dir = tmp_path / "run"
    result = run_trainer(model, "--dataset", "digits", "--batch-size", "32", "--init", "gmm", "--pseudo-labels",
                         "0.4", "--run-dir", str(run_dir), "--quiet", "--no-export", *BOUNDED[model])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "start clustering (--init gmm): ACC" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["initial"]["init"] == "gmm" and 0.0 <= metrics["initial"]["acc"] <= 1.0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["init"] == "gmm" and config["pseudo_labels"] == 0.4


@pytest.mark.parametrize("model", sorted(BOUNDED))
def test_paper_flag_turns_the_start_off_and_explicit_flags_win(model):
    from trainers import driver
    from zoo.data import load_dataset

    task = driver.task_of(model)
    dataset = load_dataset("digits")
    args = task.parse(["--dataset", "digits", "--paper"])
    task.validate(args, dataset)
    assert args.init == "none"
    args = task.parse(["--dataset", "digits"])
    task.validate(args, dataset)
    assert args.init == task.config_class.default("init") == "umap"
    args = task.parse(["--dataset", "digits", "--paper", "--init", "kmeans"])
    task.validate(args, dataset)
    assert args.init == "kmeans"
    if model == "clustergan":
        args = task.parse(["--dataset", "digits", "--paper"])
        task.validate(args, dataset)
        assert args.lr_g == args.lr_d == args.lr_e == 1e-4  # the paper's, half the zoo's
        args = task.parse(["--dataset", "digits"])
        task.validate(args, dataset)
        assert args.lr_g == args.lr_d == args.lr_e == 2e-4


@pytest.mark.parametrize("model, args, message", [
    ("clustergan", ["--pseudo-labels", "0"], "--pseudo-labels must lie in (0, 1]"),
    ("gmgan", ["--pseudo-labels", "1.5"], "--pseudo-labels must lie in (0, 1]"),
    ("kmgan", ["--space", "pixel", "--init", "gmm"], "--space pixel clusters by pixel K-Means"),
])
def test_bad_start_flags_are_one_line_with_exit_code_2(tmp_path, model, args, message):
    result = run_trainer(model, "--dataset", "digits", *args, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"trainers.{model}: error: ") and message in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["clustergan", "gmgan"])
def test_recluster_renews_the_pseudo_labels_at_an_evaluation(tmp_path, model):
    import importlib

    trainer = importlib.import_module(f"trainers.{model}")
    steps = {"clustergan": ["--iterations", "4", "--n-critic", "1"],
             "gmgan": ["--iterations", "4", "--final-enet-steps", "2", "--score-samples", "0"]}[model]
    run_dir = tmp_path / "run"
    code = trainer.main(["--dataset", "digits", "--batch-size", "32", "--init", "kmeans", "--recluster", "umap",
                         "--eval-every", "2", "--run-dir", str(run_dir), "--quiet", "--no-export", *steps])
    assert code in (0, None)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    renewed = [h for h in history if "recluster_acc" in h]
    assert renewed and all(0.0 <= h["recluster_acc"] <= 1.0 for h in renewed)
