"""Classical clustering baselines (numpy, scikit-learn and umap-learn; no TensorFlow).

* :func:`kmeans_pixels` -- k-means on the flattened inputs (pixels or vector features).
* :func:`gmm_pca` -- PCA to ``min(components, D, N-1)`` dimensions, then a full-covariance
  Gaussian mixture (``reg_covar=1e-3`` keeps it stable on near-degenerate pixel data),
  initialised from k-means, best of 2 restarts.
* :func:`umap_gmm` -- PCA-50, a 10-d UMAP embedding (umap-learn), then a full-covariance GMM:
  what a user would reach for first today, and GAN-EM's default start.

Each returns predicted cluster ids (int64 ``[N]``) and is deterministic for a given ``seed``.
:func:`run_baselines` evaluates every entry of :data:`BASELINES` over several seeds with
:func:`zoo.metrics.clustering_report`; :func:`summarize` turns a list of per-seed reports into
``<key>_mean`` / ``<key>_std`` (population std, ``np.std``).
"""
from __future__ import annotations

import time

import numpy as np

from zoo.metrics import clustering_report

__all__ = ["BASELINES", "SUMMARY_KEYS", "aligned_to", "gmm_pca", "gmm_pca_posteriors", "kmeans_pixels", "run_baselines",
           "summarize", "umap_gmm", "umap_gmm_posteriors"]

#: The clustering measures summarised by default: ``acc`` is Hungarian ACC, ``purity`` is purity.
SUMMARY_KEYS = ("acc", "nmi", "ari", "purity", "many_to_one_acc")


def _flatten(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"x must have shape [N, ...] with at least 2 dims, got {x.shape}")
    return x.reshape(x.shape[0], -1)


def kmeans_pixels(x, k: int, seed: int = 0) -> np.ndarray:
    """k-means (``n_init=10``, ``random_state=seed``) on the flattened ``x``; returns labels."""
    from sklearn.cluster import KMeans

    flat = _flatten(x)
    labels = KMeans(n_clusters=int(k), n_init=10, random_state=int(seed)).fit_predict(flat)
    return labels.astype(np.int64)


def _pca(x, components: int, seed: int) -> np.ndarray:
    """PCA of the flattened ``x`` to ``min(components, D, N-1)`` dims, no whitening."""
    from sklearn.decomposition import PCA

    flat = _flatten(x)
    n, d = flat.shape
    dims = max(1, min(int(components), d, n - 1))
    return PCA(n_components=dims, whiten=False, random_state=int(seed)).fit_transform(flat)


def gmm_pca_posteriors(x, k: int, seed: int = 0, components: int = 50) -> np.ndarray:
    """PCA to ``min(components, D, N-1)`` dims (no whitening), then a full-covariance GMM;
    returns the posterior over components of every sample, float32 ``[N, k]``.

    ``GaussianMixture(k, covariance_type="full", reg_covar=1e-3, n_init=2, init_params="kmeans",
    random_state=seed)``.
    """
    from sklearn.mixture import GaussianMixture

    z = _pca(x, components, seed)
    gmm = GaussianMixture(n_components=int(k), covariance_type="full", reg_covar=1e-3, n_init=2,
                          max_iter=200, init_params="kmeans", random_state=int(seed))
    return gmm.fit(z).predict_proba(z).astype(np.float32)


def umap_gmm_posteriors(x, k: int, seed: int = 0, components: int = 50, dims: int = 10,
                        neighbors: int = 15, reference=None) -> np.ndarray:
    """PCA to ``min(components, D, N-1)`` dims, a UMAP embedding of those to ``dims`` dims
    (``neighbors`` nearest neighbours, ``min_dist=0``: tight clusters, as for clustering), then a
    full-covariance GMM; returns the posterior over components, float32 ``[N, k]``.

    UMAP keeps the neighbourhood graph of the data rather than its linear variance, which is why
    it separates digits far better than PCA alone (umap-learn; McInnes et al. 2018). With
    ``reference`` cluster ids [N], a second GMM starts from those clusters' means in the new
    embedding, and the fit with the higher likelihood wins: a re-clustering may move away from
    the current clusters only to a better model of the data.
    """
    import warnings

    import umap
    from sklearn.mixture import GaussianMixture

    z = _pca(x, components, seed)
    n = len(z)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": the seed is the point
        warnings.simplefilter("ignore", UserWarning)
        embedding = umap.UMAP(n_components=min(int(dims), max(n - 2, 1)), n_neighbors=min(int(neighbors), n - 1),
                              min_dist=0.0, random_state=int(seed)).fit_transform(z)
    options = dict(n_components=int(k), covariance_type="full", reg_covar=1e-4, max_iter=200, random_state=int(seed))
    fits = [GaussianMixture(**options).fit(embedding)]
    if reference is not None:
        reference = np.asarray(reference)
        present = [c for c in range(int(k)) if np.any(reference == c)]
        if len(present) == int(k):
            means = np.stack([embedding[reference == c].mean(0) for c in present])
            fits.append(GaussianMixture(**options, means_init=means).fit(embedding))
    best = max(fits, key=lambda gmm: gmm.score(embedding))
    return best.predict_proba(embedding).astype(np.float32)


START_NAMES = ("kmeans", "gmm", "umap")


def start_posteriors(name: str, x, k: int, seed: int = 0) -> np.ndarray:
    """Cluster posteriors [N, k] to start a model from: ``kmeans`` (one-hot k-means labels on
    pixels), ``gmm`` (`gmm_pca_posteriors`) or ``umap`` (`umap_gmm_posteriors`)."""
    if name == "kmeans":
        return np.eye(int(k), dtype=np.float32)[kmeans_pixels(x, k, seed)]
    if name == "gmm":
        return gmm_pca_posteriors(x, k, seed)
    if name == "umap":
        return umap_gmm_posteriors(x, k, seed)
    raise ValueError(f"unknown start {name!r}: expected one of {START_NAMES}")


def confident_subset(probs, fraction: float, exclude=()) -> np.ndarray:
    """Sorted indices of the most confident ``fraction`` of each cluster's members under the
    posteriors ``probs`` [N, k] (cluster = argmax, confidence = its posterior), leaving out
    ``exclude``: the real samples a model may learn from as if labelled with their cluster."""
    probs = np.asarray(probs)
    cluster, confidence = probs.argmax(1), probs.max(1)
    chosen = []
    for c in range(probs.shape[1]):
        members = np.setdiff1d(np.flatnonzero(cluster == c), exclude)
        keep = int(np.ceil(float(fraction) * len(members)))
        chosen.append(members[np.argsort(-confidence[members], kind="stable")[:keep]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def aligned_to(probs, reference) -> np.ndarray:
    """The columns of ``probs`` [N, k] permuted so that cluster j overlaps most with cluster j of
    ``reference`` (cluster ids [N]); Hungarian matching, so a re-clustering keeps the ids."""
    from scipy.optimize import linear_sum_assignment

    k = probs.shape[1]
    overlap = np.zeros((k, k))
    np.add.at(overlap, (np.asarray(reference), probs.argmax(1)), 1)
    rows, cols = linear_sum_assignment(-overlap)
    order = np.empty(k, np.int64)
    order[rows] = cols
    return probs[:, order]


def reclustered(features, probs, seed: int = 0) -> np.ndarray:
    """A model's clusters refined: GMM posteriors on a UMAP embedding of its ``features`` [N, D]
    of the data (`umap_gmm_posteriors`, which also tries the clusters of ``probs`` [N, k] as its
    start), numbered as the clusters of ``probs`` (`aligned_to`)."""
    current = np.asarray(probs).argmax(1)
    return aligned_to(umap_gmm_posteriors(features, probs.shape[1], seed, reference=current), current)


def label_spreading_posteriors(x, labelled, labels, k: int, seed: int = 0, components: int = 50,
                               neighbors: int = 10) -> np.ndarray:
    """Semi-supervised: label spreading (Zhou et al. 2004) over a ``neighbors``-nearest-neighbour
    graph of PCA-``components`` features, from the examples ``labelled`` (indices) with classes
    ``labels``; returns float32 ``[N, k]`` class distributions (one-hot on labelled rows).

    ``LabelSpreading(kernel="knn", n_neighbors=neighbors, alpha=0.2)``.
    """
    from sklearn.semi_supervised import LabelSpreading

    z = _pca(x, components, seed)
    n = len(z)
    targets = np.full(n, -1, np.int64)
    targets[labelled] = labels
    model = LabelSpreading(kernel="knn", n_neighbors=min(int(neighbors), n - 1), alpha=0.2, max_iter=100).fit(z, targets)
    probs = np.zeros((n, int(k)), np.float32)
    probs[:, model.classes_] = model.label_distributions_
    probs /= np.maximum(probs.sum(1, keepdims=True), 1e-12)
    probs[labelled] = np.eye(int(k), dtype=np.float32)[labels]
    return probs


def gmm_pca(x, k: int, seed: int = 0, components: int = 50) -> np.ndarray:
    """The most likely component of every sample under :func:`gmm_pca_posteriors`."""
    return gmm_pca_posteriors(x, k, seed, components).argmax(axis=1).astype(np.int64)


def umap_gmm(x, k: int, seed: int = 0) -> np.ndarray:
    """The most likely component of every sample under :func:`umap_gmm_posteriors`."""
    return umap_gmm_posteriors(x, k, seed).argmax(axis=1).astype(np.int64)


#: name -> function(x, k, seed) -> labels
BASELINES = {"kmeans_pixels": kmeans_pixels, "gmm_pca50": gmm_pca, "umap_gmm": umap_gmm}


def summarize(reports, keys=SUMMARY_KEYS) -> dict:
    """``{<key>_mean, <key>_std}`` over a list of report dicts (population std, ``np.std``).

    Keys missing from every report are left out; a key missing from some reports, or whose
    value is None, is averaged over the reports that have it.
    """
    reports = list(reports)
    out = {}
    for key in keys:
        values = [float(r[key]) for r in reports if r.get(key) is not None]
        if not values:
            continue
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values))
    return out


def run_baselines(dataset, k: int, seeds, baselines=None) -> dict:
    """Runs every baseline once per seed on ``dataset`` and scores it against ``dataset.y``.

    ``dataset`` is a :class:`zoo.data.Dataset`, or a callable ``seed -> Dataset`` for data that
    depends on the seed (e.g. ``synthetic`` specs without ``seed=``, which the trainers load with
    their ``--seed``). ``baselines`` defaults to :data:`BASELINES`.

    Returns ``name -> {acc_mean, acc_std, nmi_mean, ..., wall_seconds_mean, wall_seconds_std,
    per_seed: [clustering_report + seed + wall_seconds, ...]}``.
    """
    baselines = BASELINES if baselines is None else baselines
    get = dataset if callable(dataset) else (lambda _seed: dataset)
    results = {}
    for name, fn in baselines.items():
        per_seed = []
        for seed in seeds:
            data = get(int(seed))
            if data.y is None:
                raise ValueError(f"dataset '{data.name}' has no labels; baselines cannot be scored")
            started = time.perf_counter()
            labels = fn(data.x, int(k), int(seed))
            wall = time.perf_counter() - started
            report = clustering_report(data.y, labels, int(k))
            report.update(seed=int(seed), wall_seconds=round(wall, 3))
            per_seed.append(report)
        summary = summarize(per_seed)
        summary.update(summarize(per_seed, keys=("wall_seconds",)))
        summary["per_seed"] = per_seed
        results[name] = summary
    return results
