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

from zoo.configs import START_NAMES
from zoo.metrics import clustering_report

__all__ = ["BASELINES", "SUMMARY_KEYS", "aligned_to", "gmm_pca", "gmm_pca_posteriors", "kmeans_pixels", "reclustered",
           "run_baselines", "size_evenness", "summarize", "umap_embedding", "umap_gmm", "umap_gmm_posteriors"]

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


#: Up to this many samples, `umap_embedding` finds the exact nearest neighbours itself (0.2 s for
#: 5,000) instead of letting umap-learn run NN-descent, whose numba compilation costs about a
#: minute of every new process on a 2-core CPU; above it the exact search, quadratic in the
#: number of samples, is left to NN-descent.
EXACT_NEIGHBOURS_MAX = 50_000


def umap_embedding(x, seed: int = 0, components: int = 50, dims: int = 10, neighbors: int = 15) -> np.ndarray:
    """PCA to ``min(components, D, N-1)`` dims, then a UMAP embedding of those to ``dims`` dims
    (``neighbors`` nearest neighbours, ``min_dist=0``: tight clusters, as for clustering).

    UMAP keeps the neighbourhood graph of the data rather than its linear variance, which is why
    it separates digits far better than PCA alone (umap-learn; McInnes et al. 2018).
    """
    import warnings

    import umap

    z = _pca(x, components, seed)
    n = len(z)
    neighbors = min(int(neighbors), n - 1)
    knn = (None, None, None)
    if n <= EXACT_NEIGHBOURS_MAX:
        from sklearn.neighbors import NearestNeighbors

        # Each sample is its own first neighbour, as in umap-learn's own search.
        distances, indices = NearestNeighbors(n_neighbors=neighbors).fit(z).kneighbors(z)
        knn = (indices, distances, None)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": the seed is the point
        warnings.simplefilter("ignore", UserWarning)
        return umap.UMAP(n_components=min(int(dims), max(n - 2, 1)), n_neighbors=neighbors, min_dist=0.0,
                         random_state=int(seed), precomputed_knn=knn).fit_transform(z)


def _gmm_fits(embedding, k: int, seed: int, reference=None, restarts: int = 1) -> list:
    """Full-covariance GMMs of ``embedding``: ``restarts`` from k-means (seeds ``seed``,
    ``seed + 1``, ...), and with ``reference`` cluster ids [N] (every one of the k present) one
    started from those clusters' means. Returns ``[(mean log-likelihood, posteriors float32
    [N, k]), ...]`` in that order."""
    from sklearn.mixture import GaussianMixture

    options = dict(n_components=int(k), covariance_type="full", reg_covar=1e-4, max_iter=200)
    gmms = [GaussianMixture(**options, random_state=int(seed) + i) for i in range(int(restarts))]
    if reference is not None:
        reference = np.asarray(reference)
        if all(np.any(reference == c) for c in range(int(k))):
            means = np.stack([embedding[reference == c].mean(0) for c in range(int(k))])
            gmms.append(GaussianMixture(**options, means_init=means, random_state=int(seed)))
    return [(float(gmm.fit(embedding).score(embedding)), gmm.predict_proba(embedding).astype(np.float32))
            for gmm in gmms]


def umap_gmm_posteriors(x, k: int, seed: int = 0, components: int = 50, dims: int = 10,
                        neighbors: int = 15, reference=None) -> np.ndarray:
    """A full-covariance GMM on `umap_embedding` of ``x``; returns the posterior over components,
    float32 ``[N, k]``. With ``reference`` cluster ids [N], a second GMM starts from those
    clusters' means in the embedding, and the fit with the higher likelihood wins."""
    embedding = umap_embedding(x, seed, components, dims, neighbors)
    return max(_gmm_fits(embedding, k, seed, reference), key=lambda fit: fit[0])[1]


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


#: How much less even than the model's own clusters a re-clustering's may be (`size_evenness`).
EVENNESS_TOLERANCE = 0.01
#: k-means starts of the GMM in a re-clustering, beside the one from the current clusters.
RECLUSTER_RESTARTS = 4


def size_evenness(labels, k: int) -> float:
    """The entropy of the cluster sizes of ``labels`` (ids in [0, k)) over log k: 1 when all k
    clusters are the same size, lower when one grows at the others' expense (0 for one cluster)."""
    share = np.bincount(np.asarray(labels), minlength=int(k)) / max(len(labels), 1)
    share = share[share > 0]
    return float(-(share * np.log(share)).sum() / np.log(k)) if k > 1 else 1.0


def reclustered(features, probs, seed: int = 0, tolerance: float = EVENNESS_TOLERANCE,
                restarts: int = RECLUSTER_RESTARTS):
    """A model's clusters refined: GMM posteriors on a `umap_embedding` of its ``features``
    [N, D] of the data, numbered as the clusters of ``probs`` [N, k] (`aligned_to`).

    GMMs are fitted from ``restarts`` k-means starts and from the means of the current clusters;
    the most likely fit is taken among those whose cluster sizes are no less even than the
    current clusters' (`size_evenness`, within ``tolerance``). Likelihood alone can prefer a fit
    that merges two touching clusters and splits a third (on MNIST 4s with 9s: a 1,000-member
    cluster beside two of 200-270), a clustering the model then learns and keeps; another
    k-means start can find an even fit of higher likelihood. If no fit passes, the current
    clusters stay: ``probs`` is returned.

    Returns ``(posteriors [N, k], choice)``, choice naming the fit taken: ``"fresh"`` (a k-means
    start), ``"from_current"`` or ``"kept"``.
    """
    probs = np.asarray(probs, np.float32)
    k, current = probs.shape[1], probs.argmax(1)
    floor = size_evenness(current, k) - tolerance
    fits = _gmm_fits(umap_embedding(features, seed), k, seed, reference=current, restarts=restarts)
    names = ["fresh"] * int(restarts) + ["from_current"]
    passing = [(score, name, posteriors) for (score, posteriors), name in zip(fits, names)
               if size_evenness(posteriors.argmax(1), k) >= floor]
    if not passing:
        return probs, "kept"
    _, name, posteriors = max(passing, key=lambda fit: fit[0])
    return aligned_to(posteriors, current), name


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
    model = LabelSpreading(kernel="knn", n_neighbors=min(int(neighbors), n - 1), alpha=0.2, max_iter=100)
    model.fit(z, targets)
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
