"""GAN-EM's start and E-step options beyond the paper: UMAP + GMM soft labels, re-clustering
of the E-net's features, pseudo-labels, and --paper, which turns all of them off."""

import numpy as np
import pytest

from zoo import baselines, metrics
from zoo.data import load_dataset


def test_aligned_to_renumbers_clusters_to_the_reference():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 4, 200)
    probs = np.eye(4, dtype=np.float32)[reference][:, [2, 0, 3, 1]]  # the same clusters, other ids
    probs[:10] = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 10)]  # a few disagree
    aligned = baselines.aligned_to(probs, reference)
    assert np.mean(aligned.argmax(1)[10:] == reference[10:]) == 1.0
    assert sorted(aligned.sum(0).tolist()) == sorted(probs.sum(0).tolist())  # columns moved, not changed


@pytest.fixture(scope="module")
def blobs():
    data = load_dataset("synthetic:clusters=4,samples=600,dim=20", seed=1)
    return data.x, data.y


def test_umap_gmm_finds_separated_clusters(blobs):
    x, y = blobs
    w = baselines.umap_gmm_posteriors(x, 4, seed=0)
    assert w.shape == (len(x), 4) and np.allclose(w.sum(1), 1.0, atol=1e-4)
    assert metrics.cluster_accuracy(y, w.argmax(1)) > 0.9


def test_umap_embedding_finds_neighbours_without_nn_descent(blobs, monkeypatch):
    # NN-descent's numba compilation costs about a minute a process: small sets skip it.
    import umap.umap_

    def no_search(*args, **kwargs):
        raise AssertionError("umap-learn searched for neighbours itself")

    monkeypatch.setattr(umap.umap_, "nearest_neighbors", no_search)
    x, y = blobs
    embedding = baselines.umap_embedding(x, seed=0, dims=3)
    assert embedding.shape == (len(x), 3) and np.isfinite(embedding).all()


@pytest.mark.slow
def test_umap_gmm_with_nn_descent_above_the_exact_search_limit(blobs, monkeypatch):
    monkeypatch.setattr(baselines, "EXACT_NEIGHBOURS_MAX", 100)
    x, y = blobs
    assert metrics.cluster_accuracy(y, baselines.umap_gmm_posteriors(x, 4, seed=0).argmax(1)) > 0.9


def test_umap_gmm_from_a_reference_keeps_good_clusters(blobs):
    # Started from the true clusters, the re-clustering keeps them (up to numbering).
    x, y = blobs
    w = baselines.aligned_to(baselines.umap_gmm_posteriors(x, 4, seed=0, reference=y), y)
    assert np.mean(w.argmax(1) == y) > 0.9


@pytest.mark.parametrize("flags, expected", [
    ([], dict(init="umap", pseudo_labels=0.5, recluster="umap", augment="all")),
    (["--labels", "50"], dict(init="spread", pseudo_labels=0.0, recluster="none", augment="all")),
    (["--paper"], dict(init="uniform", pseudo_labels=0.0, recluster="none", augment="none")),
    (["--paper", "--init", "gmm"], dict(init="gmm", pseudo_labels=0.0, recluster="none", augment="none")),
    (["--pseudo-labels", "0"], dict(init="umap", pseudo_labels=0.0, recluster="umap", augment="none")),
    (["--jit"], dict(init="umap", pseudo_labels=0.5, recluster="umap", augment="none")),  # no XLA kernel
    (["--init", "uniform"], dict(init="uniform", pseudo_labels=0.0, recluster="umap", augment="none")),
])
def test_defaults_and_the_paper_one_flag_away(flags, expected):
    from trainers.ganem import GANEMTask, validate

    args = GANEMTask.parse(["--dataset", "digits", *flags])
    validate(args, load_dataset("digits", seed=0))
    assert {key: getattr(args, key) for key in expected} == expected


def test_augmentation_under_xla_is_a_one_line_error():
    from trainers import common
    from trainers.ganem import GANEMTask, validate

    args = GANEMTask.parse(["--dataset", "digits", "--jit", "--augment", "all"])
    with pytest.raises(common.UsageError, match="--augment all cannot be XLA-compiled"):
        validate(args, load_dataset("digits", seed=0))


def test_bad_pseudo_label_fraction_is_a_one_line_error(tmp_path):
    from test_trainer_cli import SMALL, run_trainer

    result = run_trainer(*SMALL, "--pseudo-labels", "1.5", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["trainers.ganem: error: --pseudo-labels must lie in [0, 1] (got 1.5)"]


def test_default_em_with_pseudo_labels_and_reclustering_runs(tmp_path):
    """The defaults end to end on a small image set: UMAP start, pseudo-labelled E-steps and
    re-clustering after each, every iteration in history.jsonl with the re-clustered labels."""
    import json

    from test_trainer_cli import run_trainer

    run_dir = tmp_path / "run"
    result = run_trainer("--dataset", "digits", "--first-m-steps", "4", "--m-steps", "3", "--e-steps", "3",
                         "--iterations", "2", "--batch-size", "32", "--quiet", "--no-export",
                         "--run-dir", str(run_dir), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics_ = json.loads((run_dir / "metrics.json").read_text())
    assert metrics_["initial"]["init"] == "umap"
    history = metrics_["history"]
    assert [h["em_iteration"] for h in history] == [1, 2]
    assert all("acc" in h["soft_labels"] and h["wall_seconds"] > 0 for h in history)
    assert all(h["recluster_fit"] in ("fresh", "from_current", "kept") for h in history)
    assert "re-clustered: ACC" in result.stdout


def test_size_evenness():
    assert baselines.size_evenness(np.repeat(np.arange(4), 50), 4) == pytest.approx(1.0)
    assert baselines.size_evenness(np.zeros(200, np.int64), 4) == 0.0
    merged = np.repeat([0, 0, 1, 2], 50)  # two clusters in one, one cluster empty
    assert 0.5 < baselines.size_evenness(merged, 4) < 0.9


def test_reclustering_keeps_good_clusters_and_falls_back_to_the_models_posteriors(blobs):
    x, y = blobs
    refined, choice = baselines.reclustered(x, np.eye(4, dtype=np.float32)[y], seed=0)
    assert choice in ("fresh", "from_current") and np.mean(refined.argmax(1) == y) > 0.9
    # A floor no fit can reach (evenness above 1): every fit is refused, the model's own
    # posteriors stay.
    uneven = np.eye(4, dtype=np.float32)[np.where(y == 3, 2, y)]  # classes 2 and 3 as one cluster
    merged, choice = baselines.reclustered(x, uneven, seed=0, tolerance=-0.5)
    assert choice == "kept" and np.array_equal(merged, uneven)
