"""Clustering and generator-quality metrics (numpy / scipy / scikit-learn only).

Clustering measures
-------------------
All clustering measures take ``y_true`` (ground-truth class ids) and ``y_pred``
(predicted cluster ids): 1-D, integer-like, equal length > 0, non-negative.
Label values need not be contiguous (``{3, 7, 42}`` is fine) and cluster ids
carry no meaning of their own: every measure here is invariant to relabelling.

* :func:`cluster_accuracy` -- *Hungarian* accuracy (the "ACC" of the deep
  clustering literature).  Clusters are mapped **one-to-one** onto classes by
  the assignment that maximises the number of correctly placed samples
  (``scipy.optimize.linear_sum_assignment``).  When there are more clusters
  than classes, the unmatched clusters count as wrong, so ACC is then *not*
  a meaningful number (see :func:`clustering_report`).
* :func:`many_to_one_accuracy` -- each cluster is mapped to its majority
  class; several clusters may map to the same class.  The usual measure when
  K > number of classes.
* :func:`purity` -- sum over clusters of the majority-class count, divided by
  N.  Numerically identical to :func:`many_to_one_accuracy`; both names are
  kept because the literature reports both.  **Hungarian ACC is not purity**:
  ACC <= purity always, with equality only when the majority classes of the
  clusters are all distinct.
* :func:`nmi` -- normalised mutual information (scikit-learn, arithmetic
  averaging).
* :func:`ari` -- adjusted Rand index (scikit-learn).

Generator-quality helpers
-------------------------
* :func:`frechet_distance` -- Frechet distance between Gaussians fitted to two
  feature sets.  With features from a small reference classifier this is
  "FD-classifier"; it must never be reported as FID (which is defined on
  Inception-v3 pool features only).
* :func:`classifier_quality` -- mean top-class confidence of a reference
  classifier on generated samples.
* :func:`classifier_diversity` -- normalised entropy of the mean predicted
  class distribution on generated samples.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "confusion_matrix",
    "cluster_accuracy",
    "cluster_to_class_mapping",
    "many_to_one_accuracy",
    "purity",
    "nmi",
    "ari",
    "clustering_report",
    "frechet_distance",
    "classifier_quality",
    "classifier_diversity",
]


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------
def _as_labels(x, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D int64 array, or raise a one-line ``ValueError``."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # e.g. ragged nested sequences
        raise ValueError(f"{name} cannot be converted to an array: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer-like, got non-integral float values")
    else:
        raise ValueError(f"{name} must be integer-like, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name} contains negative labels (min {int(arr.min())}); labels must be >= 0")
    return arr


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return t, p


def _contingency(t: np.ndarray, p: np.ndarray):
    """Compact contingency table over the labels that actually occur.

    Returns ``(table, clusters, classes)`` where ``table[i, j]`` counts samples
    with cluster ``clusters[i]`` and class ``classes[j]``.
    """
    clusters, p_idx = np.unique(p, return_inverse=True)
    classes, t_idx = np.unique(t, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (p_idx, t_idx), 1)
    return table, clusters, classes


# --------------------------------------------------------------------------
# Clustering measures
# --------------------------------------------------------------------------
def confusion_matrix(y_true, y_pred, num_clusters: int | None = None) -> np.ndarray:
    """Cluster-by-class count matrix, indexed by the raw label values.

    ``M[k, c]`` is the number of samples placed in cluster ``k`` whose true
    class is ``c``.  Shape is ``[num_clusters, num_classes]`` with
    ``num_classes = max(y_true) + 1`` and ``num_clusters`` defaulting to
    ``max(y_pred) + 1``.  Clusters (or classes) that never occur give all-zero
    rows (columns), so empty clusters and K > classes are both fine.

    Raises ``ValueError`` if a predicted id is ``>= num_clusters``.
    """
    t, p = _check_pair(y_true, y_pred)
    max_pred = int(p.max())
    if num_clusters is None:
        num_clusters = max_pred + 1
    else:
        num_clusters = int(num_clusters)
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        if max_pred >= num_clusters:
            raise ValueError(
                f"y_pred contains cluster id {max_pred} but num_clusters is {num_clusters}"
            )
    num_classes = int(t.max()) + 1
    m = np.zeros((num_clusters, num_classes), dtype=np.int64)
    np.add.at(m, (p, t), 1)
    return m


def _hungarian(t: np.ndarray, p: np.ndarray):
    table, clusters, classes = _contingency(t, p)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return table, clusters, classes, rows, cols


def cluster_accuracy(y_true, y_pred) -> float:
    """Hungarian-matched clustering accuracy ("ACC"), in ``[0, 1]``.

    Finds the one-to-one map from clusters to classes that maximises the
    number of correctly assigned samples (``linear_sum_assignment`` on the
    cluster/class count matrix) and returns that number divided by N.  With
    more clusters than classes, the clusters left unmatched count as wrong,
    which makes ACC pessimistic and not meaningful -- use
    :func:`many_to_one_accuracy` in that case.

    This is *not* purity: purity lets several clusters share one class.
    """
    t, p = _check_pair(y_true, y_pred)
    table, _, _, rows, cols = _hungarian(t, p)
    return float(table[rows, cols].sum() / t.size)


def cluster_to_class_mapping(y_true, y_pred) -> dict[int, int]:
    """The Hungarian one-to-one map used by :func:`cluster_accuracy`.

    Returns ``{cluster_id: class_id}`` over the raw label values.  Only
    clusters that occur in ``y_pred`` and were matched appear; when there are
    more clusters than classes, the unmatched clusters are absent.
    """
    t, p = _check_pair(y_true, y_pred)
    _, clusters, classes, rows, cols = _hungarian(t, p)
    return {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}


def many_to_one_accuracy(y_true, y_pred) -> float:
    """Accuracy after mapping every cluster to its majority class.

    Several clusters may map to the same class, so this is the appropriate
    accuracy when K > number of classes.  Numerically identical to
    :func:`purity`.  Always ``>=`` :func:`cluster_accuracy`.
    """
    t, p = _check_pair(y_true, y_pred)
    table, _, _ = _contingency(t, p)
    return float(table.max(axis=1).sum() / t.size)


def purity(y_true, y_pred) -> float:
    """Cluster purity: ``sum_k max_c |cluster k ∩ class c| / N``.

    Numerically the same quantity as :func:`many_to_one_accuracy`; both names
    are kept because papers report one or the other.  Not to be confused with
    Hungarian ACC (:func:`cluster_accuracy`), which is one-to-one.
    """
    return many_to_one_accuracy(y_true, y_pred)


def nmi(y_true, y_pred) -> float:
    """Normalised mutual information (scikit-learn, arithmetic averaging), in ``[0, 1]``."""
    t, p = _check_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index (scikit-learn); 1 for identical partitions, ~0 for random ones."""
    t, p = _check_pair(y_true, y_pred)
    return float(adjusted_rand_score(t, p))


def clustering_report(y_true, y_pred, num_clusters: int) -> dict:
    """All clustering measures in one dict.

    Keys: ``acc`` (Hungarian), ``many_to_one_acc``, ``nmi``, ``ari``,
    ``purity`` (floats), ``clusters`` (int, = ``num_clusters``) and
    ``acc_meaningful`` (bool): ``num_clusters <= number of distinct true
    classes``.  When it is False, Hungarian ACC penalises the surplus clusters
    and callers should print a note and prefer ``many_to_one_acc``.
    """
    t, p = _check_pair(y_true, y_pred)
    k = int(num_clusters)
    if k < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    n_used = int(np.unique(p).size)
    if n_used > k:
        raise ValueError(f"y_pred uses {n_used} distinct clusters but num_clusters is {k}")
    n_classes = int(np.unique(t).size)
    m2o = many_to_one_accuracy(t, p)
    return {
        "acc": cluster_accuracy(t, p),
        "many_to_one_acc": m2o,
        "nmi": nmi(t, p),
        "ari": ari(t, p),
        "purity": m2o,
        "clusters": k,
        "acc_meaningful": bool(k <= n_classes),
    }


# --------------------------------------------------------------------------
# Generator-quality helpers
# --------------------------------------------------------------------------
def _as_features(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, d], got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to fit a covariance, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two ``[N, d]`` feature sets.

    ``d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``

    The matrix square root is ``scipy.linalg.sqrtm``; if it is not finite
    (near-singular covariances) ``eps`` is added to both diagonals and it is
    retried.  Its real part is used: small imaginary parts are numerical
    noise; a large one triggers a ``RuntimeWarning``.  The result is clipped
    at 0.

    When the features come from a small reference classifier (as in this zoo)
    the number is "FD-classifier".  It is only comparable with itself (same
    classifier, same layer) and must **never** be called or reported as FID,
    which is defined on Inception-v3 pool3 features.
    """
    a = _as_features(feats_a, "feats_a")
    b = _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_a and feats_b differ in feature size: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))

    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.imag(covmean)))
        scale = max(1.0, float(np.max(np.abs(np.real(covmean)))))
        if imag > 1e-3 * scale:
            warnings.warn(
                f"frechet_distance: sqrtm has a large imaginary part ({imag:.3g}); "
                "using the real part",
                RuntimeWarning,
                stacklevel=2,
            )
        covmean = np.real(covmean)

    diff = mu_a - mu_b
    dist = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    return float(max(dist, 0.0))


def _as_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty 2-D [N, C] matrix, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or infinite values")
    if p.min() < 0:
        raise ValueError(f"probs contains negative values (min {p.min():.3g}); pass probabilities, not logits")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            f"probs rows must sum to 1 (found sums in [{sums.min():.3g}, {sums.max():.3g}]); "
            "pass softmax probabilities, not logits"
        )
    return p


def classifier_quality(probs) -> float:
    """Mean top-class confidence ``mean_i max_c p_ic`` of a reference classifier.

    ``probs`` is an ``[N, C]`` matrix of class probabilities for N generated
    samples.  In ``[1/C, 1]``; higher means samples look more like *some*
    class.
    """
    p = _as_probs(probs)
    return float(p.max(axis=1).mean())


def classifier_diversity(probs) -> float:
    """Normalised entropy of the mean predicted class distribution, in ``[0, 1]``.

    ``H(mean_i p_i) / log(C)``: 1.0 when generated samples cover all C
    classes evenly, 0.0 when they all fall in one class (mode collapse).
    Defined as 0.0 when C == 1.
    """
    p = _as_probs(probs)
    c = p.shape[1]
    if c == 1:
        return 0.0
    marg = p.mean(axis=0)
    marg = marg / marg.sum()
    nz = marg[marg > 0]
    h = float(-(nz * np.log(nz)).sum())
    return float(min(max(h / np.log(c), 0.0), 1.0))
