"""Hand-computed checks for zoo.metrics (fast, no TensorFlow)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo import metrics as M


# ---------------------------------------------------------------- permutation invariance
def test_permuted_labels_are_perfect():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [2, 2, 0, 0, 1, 1]
    assert M.cluster_accuracy(y_true, y_pred) == 1.0
    assert M.nmi(y_true, y_pred) == pytest.approx(1.0)
    assert M.ari(y_true, y_pred) == pytest.approx(1.0)
    assert M.purity(y_true, y_pred) == 1.0
    assert M.cluster_to_class_mapping(y_true, y_pred) == {2: 0, 0: 1, 1: 2}


# ---------------------------------------------------------------- confusion matrix
def test_confusion_matrix_rows_are_clusters_cols_are_classes():
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [1, 1, 0, 0, 0, 0]
    cm = M.confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(cm, [[1, 3], [2, 0]])


def test_confusion_matrix_empty_clusters_and_k_gt_classes():
    cm = M.confusion_matrix([0, 1, 1], [0, 2, 2], num_clusters=4)
    assert cm.shape == (4, 2)
    np.testing.assert_array_equal(cm, [[1, 0], [0, 0], [0, 2], [0, 0]])


def test_confusion_matrix_cluster_id_out_of_range():
    with pytest.raises(ValueError, match="cluster id 3 but num_clusters is 2"):
        M.confusion_matrix([0, 1], [0, 3], num_clusters=2)


# ---------------------------------------------------------------- Hungarian ACC by hand
def test_hungarian_small_confusion():
    # cluster 0 = {c0:1, c1:3}, cluster 1 = {c0:2, c1:0}
    # maps: (0->1, 1->0) = 3+2 = 5 ; (0->0, 1->1) = 1+0 = 1  =>  ACC = 5/6
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [1, 1, 0, 0, 0, 0]
    assert M.cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    assert M.cluster_to_class_mapping(y_true, y_pred) == {0: 1, 1: 0}


def test_hungarian_differs_from_purity():
    # cluster 0 = {c0:3}, cluster 1 = {c0:2, c1:1}; both clusters' majority is c0.
    # purity = (3+2)/6 ; Hungarian: (0->0,1->1) = 3+1 = 4 vs (0->1,1->0) = 0+2 = 2  => 4/6
    y_true = [0, 0, 0, 0, 0, 1]
    y_pred = [0, 0, 0, 1, 1, 1]
    assert M.cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert M.purity(y_true, y_pred) == pytest.approx(5 / 6)
    assert M.many_to_one_accuracy(y_true, y_pred) == pytest.approx(5 / 6)


def test_k_greater_than_classes():
    # 4 singleton-ish clusters over 2 classes: one-to-one can match only 2 clusters.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 2, 3]
    acc = M.cluster_accuracy(y_true, y_pred)
    m2o = M.many_to_one_accuracy(y_true, y_pred)
    assert acc == pytest.approx(0.5)
    assert m2o == pytest.approx(1.0)
    assert acc < m2o
    assert len(M.cluster_to_class_mapping(y_true, y_pred)) == 2


def test_purity_equals_many_to_one_random():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=300)
    y_pred = rng.integers(0, 9, size=300)
    assert M.purity(y_true, y_pred) == M.many_to_one_accuracy(y_true, y_pred)
    assert M.cluster_accuracy(y_true, y_pred) <= M.purity(y_true, y_pred)


def test_non_contiguous_labels():
    y_true = [10, 10, 20, 20, 30]
    y_pred = [7, 7, 3, 3, 100]
    assert M.cluster_accuracy(y_true, y_pred) == 1.0
    assert M.cluster_to_class_mapping(y_true, y_pred) == {7: 10, 3: 20, 100: 30}
    assert M.nmi(y_true, y_pred) == pytest.approx(1.0)
    cm = M.confusion_matrix(y_true, y_pred)
    assert cm.shape == (101, 31)
    assert cm[7, 10] == 2 and cm[3, 20] == 2 and cm[100, 30] == 1 and cm.sum() == 5


def test_integral_floats_accepted():
    assert M.cluster_accuracy(np.array([0.0, 1.0]), np.array([1.0, 0.0])) == 1.0


# ---------------------------------------------------------------- NMI / ARI by hand
def test_independent_partitions_nmi_ari():
    # contingency all ones: sum C(n_ij,2)=0, sum C(a,2)=sum C(b,2)=2, C(4,2)=6
    # expected = 2*2/6 = 2/3 ; ARI = (0 - 2/3) / (2 - 2/3) = -0.5 ; MI = 0
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 0, 1]
    assert M.nmi(y_true, y_pred) == pytest.approx(0.0, abs=1e-12)
    assert M.ari(y_true, y_pred) == pytest.approx(-0.5)
    assert M.cluster_accuracy(y_true, y_pred) == pytest.approx(0.5)


# ---------------------------------------------------------------- report
def test_clustering_report_keys_and_flag():
    r = M.clustering_report([0, 0, 1, 1], [0, 1, 2, 3], num_clusters=4)
    assert set(r) == {"acc", "many_to_one_acc", "nmi", "ari", "purity", "clusters", "acc_meaningful"}
    assert r["acc_meaningful"] is False
    assert r["clusters"] == 4 and isinstance(r["clusters"], int)
    for k in ("acc", "many_to_one_acc", "nmi", "ari", "purity"):
        assert isinstance(r[k], float)
    assert r["acc"] == pytest.approx(0.5) and r["purity"] == r["many_to_one_acc"] == 1.0

    r2 = M.clustering_report([0, 0, 1, 1], [1, 1, 0, 0], num_clusters=2)
    assert r2["acc_meaningful"] is True and r2["acc"] == 1.0


def test_clustering_report_too_many_used_clusters():
    with pytest.raises(ValueError, match="3 distinct clusters but num_clusters is 2"):
        M.clustering_report([0, 1, 1], [0, 1, 2], num_clusters=2)


# ---------------------------------------------------------------- validation
def test_length_mismatch_message():
    with pytest.raises(ValueError, match="y_true and y_pred differ in length: 10 vs 9"):
        M.cluster_accuracy(np.zeros(10, int), np.zeros(9, int))


@pytest.mark.parametrize("fn", [M.cluster_accuracy, M.nmi, M.ari, M.purity, M.confusion_matrix])
def test_negative_labels_raise(fn):
    with pytest.raises(ValueError, match="y_pred contains negative labels"):
        fn([0, 1, 1], [0, -1, 1])
    with pytest.raises(ValueError, match="y_true contains negative labels"):
        fn([0, -2, 1], [0, 1, 1])


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="y_true is empty"):
        M.cluster_accuracy([], [])
    with pytest.raises(ValueError, match="y_pred must be 1-D"):
        M.cluster_accuracy([0, 1], [[0], [1]])
    with pytest.raises(ValueError, match="integer-like"):
        M.cluster_accuracy([0, 1], [0.5, 1.0])
    with pytest.raises(ValueError, match="integer-like"):
        M.cluster_accuracy(["a", "b"], [0, 1])


# ---------------------------------------------------------------- Frechet distance
def test_frechet_identical_is_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 5))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shift_is_squared_mean_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 3))
    shift = np.array([1.0, 2.0, -2.0])  # ||shift||^2 = 9
    assert M.frechet_distance(a, a + shift) == pytest.approx(9.0, rel=1e-6)


def test_frechet_scaled_1d():
    # var_b = 4 var_a: d^2 = var_a + 4 var_a - 2*sqrt(4 var_a^2) = var_a
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 1))
    a -= a.mean()  # scaling must not move the mean
    var_a = np.var(a, ddof=1)
    assert M.frechet_distance(a, 2 * a) == pytest.approx(var_a, rel=1e-6)


def test_frechet_bad_shapes():
    with pytest.raises(ValueError, match="differ in feature size: 3 vs 2"):
        M.frechet_distance(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="must be 2-D"):
        M.frechet_distance(np.zeros(5), np.zeros(5))


# ---------------------------------------------------------------- quality / diversity
def test_one_hot_uniform_marginal():
    probs = np.tile(np.eye(4), (3, 1))
    assert M.classifier_quality(probs) == pytest.approx(1.0)
    assert M.classifier_diversity(probs) == pytest.approx(1.0)


def test_mode_collapse():
    probs = np.zeros((10, 5))
    probs[:, 2] = 1.0
    assert M.classifier_quality(probs) == pytest.approx(1.0)
    assert M.classifier_diversity(probs) == pytest.approx(0.0)


def test_uniform_rows_and_half_marginal():
    assert M.classifier_quality(np.full((6, 4), 0.25)) == pytest.approx(0.25)
    assert M.classifier_diversity(np.full((6, 4), 0.25)) == pytest.approx(1.0)
    # marginal [0.5, 0.5, 0, 0]: H = log 2, / log 4 = 0.5 ; quality = mean(0.9, 0.9) = 0.9
    probs = np.array([[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0]])
    assert M.classifier_quality(probs) == pytest.approx(0.9)
    assert M.classifier_diversity(probs) == pytest.approx(0.5)


def test_logits_rejected():
    with pytest.raises(ValueError, match="not logits"):
        M.classifier_quality(np.array([[2.0, -1.0], [0.5, 0.3]]))


# ---------------------------------------------------------------- no TensorFlow
def test_module_does_not_import_tensorflow():
    path = Path(M.__file__).resolve()
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
