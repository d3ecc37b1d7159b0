"""GAN-EM beyond plain clustering: semi-supervised labels, the learned prior on
unbalanced data, dimensionality reduction, networks by input shape."""

import json

import numpy as np
import pytest
import tensorflow as tf
from test_trainer_cli import SMALL, run_trainer

from zoo.data import load_dataset
from zoo.ganem import GANEM


@pytest.mark.parametrize("shape, side", [((32, 32, 3), 32), ((64, 64, 3), 64), ((100,), None), ((8, 8, 1), None)])
def test_networks_follow_the_input_shape(shape, side):
    model = GANEM(shape, 4, latent_dim=8)
    assert model.generator.output_shape[1:] == shape
    assert model.cluster_probs(tf.zeros((2, *shape))).shape == (2, 4)
    convolutional = any("Conv" in type(layer).__name__ for layer in model.generator.layers)
    assert convolutional == (side is not None)


def test_semi_supervised_run_reports_test_error_on_unlabelled_examples(tmp_path):
    run_dir = tmp_path / "run"
    result = run_trainer(*SMALL, "--labels", "50", "--init", "spread", "--max-steps", "12", "--run-dir", str(run_dir),
                         "--no-export")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labels"] == 50 and 0.0 <= metrics["test_error"] <= 1.0
    # Metrics are computed on the 1,797 - 50 examples not used as labels.
    assert sum(metrics["cluster_sizes"]) == 1797 - 50
    assert "test error" in result.stdout
    # Where EM started: label spreading from the 50 labels, measured on the same examples.
    assert metrics["initial"]["init"] == "spread" and 0.0 <= metrics["initial"]["test_error"] <= 1.0
    assert "initial soft labels (--init spread)" in result.stdout
    # Labels on images: the E-net trains on random poses unless told otherwise.
    assert json.loads((run_dir / "config.json").read_text())["augment"] == "all"


@pytest.mark.parametrize("flags, e_steps, decay", [([], 200, "none"), (["--labels", "50"], 800, "cosine"),
                                                    (["--labels", "50", "--e-steps", "5", "--lr-e-decay", "none"],
                                                     5, "none")])
def test_labelled_runs_default_to_a_longer_decaying_e_step(flags, e_steps, decay):
    import keras

    from trainers.ganem import GANEMTask, e_learning_rate, validate

    args = GANEMTask.parse(["--dataset", "digits", *flags])
    validate(args, load_dataset("digits", seed=0))
    assert (args.e_steps, args.lr_e_decay) == (e_steps, decay)
    rate = e_learning_rate(args)
    if decay == "none":
        assert rate == args.lr_e
    else:  # from lr_e at the first E-step down to 10 % of it at the last
        total = args.iterations * args.e_steps
        assert float(rate(0)) == pytest.approx(args.lr_e) and float(rate(total)) == pytest.approx(0.1 * args.lr_e)
        assert isinstance(rate, keras.optimizers.schedules.LearningRateSchedule)


@pytest.mark.slow
def test_learned_prior_moves_towards_unbalanced_proportions(tmp_path):
    data = load_dataset("synthetic:clusters=2,samples=2000,dim=10", seed=0)
    keep = np.concatenate([np.flatnonzero(data.y == 0)[:800], np.flatnonzero(data.y == 1)[:200]])
    np.savez(tmp_path / "unbalanced.npz", x=data.x[keep], y=data.y[keep])
    common = ["--dataset", str(tmp_path / "unbalanced.npz"), "--clusters", "2", "--init", "kmeans",
              "--paper", "--iterations", "2", "--m-steps", "60", "--e-steps", "60", "--lr-e", "1e-3", "--quiet",
              "--no-export"]
    learned = run_trainer(*common, "--run-dir", str(tmp_path / "learned"))
    fixed = run_trainer(*common, "--fixed-prior", "--run-dir", str(tmp_path / "fixed"))
    assert learned.returncode == 0 and fixed.returncode == 0, learned.stderr[-2000:] + fixed.stderr[-2000:]
    prior = sorted(json.loads((tmp_path / "learned" / "metrics.json").read_text())["prior"])
    assert prior[1] > 0.7, prior  # true proportions 0.8 / 0.2, start 0.5 / 0.5
    assert json.loads((tmp_path / "fixed" / "metrics.json").read_text())["prior"] == [0.5, 0.5]


def test_embedding_dim_2_exports_embedding_and_plots(tmp_path):
    run_dir = tmp_path / "run"
    result = run_trainer(*SMALL, "--embedding-dim", "2", "--max-steps", "6", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("embedding_by_cluster.png", "embedding_by_label.png"):
        assert (run_dir / name).stat().st_size > 0
    enet = tf.saved_model.load(str(run_dir / "export" / "ganem_enet" / "1")).signatures["serving_default"]
    assert enet(images=tf.zeros((3, 8, 8, 1)))["embedding"].shape == (3, 2)


@pytest.mark.parametrize("args, expected", [
    (["--labels", "1797"], "--labels 1797"),
    (["--labels", "50", "--clusters", "5"], "--clusters equal to the number of classes"),
    (["--embedding-dim", "0"], "--embedding-dim must be at least 1"),
    (["--dataset", "synthetic", "--augment", "labelled"], "--augment labelled needs image data"),
])
def test_bad_paper_options_are_one_line_errors(tmp_path, args, expected):
    result = run_trainer(*SMALL, "--run-dir", str(tmp_path / "run"), *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr


def test_labels_on_unlabelled_data_is_a_one_line_error(tmp_path):
    np.savez(tmp_path / "nolabels.npz", x=np.random.default_rng(0).uniform(size=(50, 8, 8, 1)).astype(np.float32))
    result = run_trainer("--dataset", str(tmp_path / "nolabels.npz"), "--labels", "10", "--run-dir",
                         str(tmp_path / "run"))
    assert result.returncode == 2 and "has no labels" in result.stderr


def test_initial_clusters_are_renumbered_to_the_classes_of_labelled_examples():
    from trainers.ganem import initial_soft_labels
    from zoo.data import labeled_subset
    from zoo.metrics import cluster_accuracy

    data = load_dataset("digits")
    labelled = labeled_subset(data.y, 100, 10, 0)
    unaligned = initial_soft_labels("kmeans", data.x, 10, 0).argmax(1)
    aligned = initial_soft_labels("kmeans", data.x, 10, 0, data.y, labelled).argmax(1)
    # Same partition, new numbering: cluster c now means class c, nearly as well as the best matching.
    assert cluster_accuracy(data.y, aligned) == pytest.approx(cluster_accuracy(data.y, unaligned))
    assert np.mean(aligned == data.y) > cluster_accuracy(data.y, unaligned) - 0.05
    assert np.mean(unaligned == data.y) < 0.5


def test_label_spreading_init_keeps_labels_and_beats_renumbered_gmm():
    from trainers.ganem import initial_soft_labels
    from zoo.data import labeled_subset

    data = load_dataset("digits")
    labelled = labeled_subset(data.y, 50, 10, 0)
    unlabelled = np.setdiff1d(np.arange(len(data)), labelled)
    error = {}
    for init in ("spread", "gmm"):
        w = initial_soft_labels(init, data.x, 10, 0, data.y, labelled)
        assert w.shape == (len(data), 10) and np.allclose(w.sum(1), 1.0, atol=1e-5)
        error[init] = float(np.mean(w.argmax(1)[unlabelled] != data.y[unlabelled]))
    w = initial_soft_labels("spread", data.x, 10, 0, data.y, labelled)
    np.testing.assert_array_equal(w[labelled], np.eye(10)[data.y[labelled]])
    assert error["spread"] < error["gmm"], error


def test_spread_init_without_labels_is_a_one_line_error(tmp_path):
    result = run_trainer(*SMALL, "--init", "spread", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "--init spread needs labelled examples" in result.stderr


@pytest.mark.slow  # two runs of the paper's method on digits: about a minute on 2 cores
def test_over_clustering_is_better_with_the_authors_code_variant(tmp_path):
    # At K = 20 on digits with the paper's method (uniform start, 4 EM iterations) the K sigmoid
    # heads reach a many-to-one ACC of 0.47 +- 0.01 over seeds 0-2, the (K+1)-way softmax D of
    # the authors' code 0.70 +- 0.05 (lowest seed 0.645) with every cluster filled: a gap of
    # 0.1 leaves room for any seed.
    reports = {}
    for name, flags in (("paper20", []), ("code20", ["--variant", "authors-code"])):
        result = run_trainer("--dataset", "digits", "--paper", "--clusters", "20", *flags, "--quiet",
                             "--no-export", "--run-dir", str(tmp_path / name))
        assert result.returncode == 0, result.stderr[-3000:]
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert sum(size > 0 for size in reports["code20"]["cluster_sizes"]) == 20
    assert reports["code20"]["many_to_one_acc"] > reports["paper20"]["many_to_one_acc"] + 0.1


@pytest.mark.slow
def test_empty_clusters_of_the_paper_variant_get_a_hint(tmp_path):
    # Four M-steps cannot fill 20 clusters: the run says so once and names the variant that keeps them.
    result = run_trainer(*SMALL, "--clusters", "20", "--no-export", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    hints = [line for line in result.stdout.splitlines() if line.startswith("note:") and "clusters hold no" in line]
    assert len(hints) == 1 and "--variant authors-code" in hints[0], result.stdout
