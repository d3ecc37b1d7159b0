"""K-Means in TensorFlow, for use inside distributed training steps (KM-GAN).

* `kmeans_plus_plus`: k-means++ seeding (Arthur & Vassilvitskii 2007) with stateless
  sampling, so every replica picks the same centers from the same features and seed.
* `assign`: nearest center and squared distances.
* `minibatch_update`: one mini-batch K-Means step (Sculley 2010) with per-center learning
  rates 1/count, from per-class feature sums and counts that the caller has summed over
  all replicas, so mirrored centers stay identical everywhere.
* `lloyd` and `fit`: full-batch Lloyd iterations, and k-means++ seeding followed by them,
  best of several restarts by inertia (as scikit-learn's `n_init`).
"""

import tensorflow as tf


def squared_distances(points, centers):
    """[N, d], [K, d] -> [N, K] squared Euclidean distances."""
    return (tf.reduce_sum(tf.square(points), 1, keepdims=True) - 2.0 * tf.matmul(points, centers, transpose_b=True)
            + tf.reduce_sum(tf.square(centers), 1)[None, :])


def assign(points, centers):
    """(nearest center id [N] int32, squared distances [N, K])."""
    distances = tf.maximum(squared_distances(points, centers), 0.0)
    return tf.argmin(distances, axis=1, output_type=tf.int32), distances


def kmeans_plus_plus(points, k, seed):
    """k-means++ seeding: [N, d] points -> [k, d] centers; `seed` is a stateless [2] seed."""
    points = tf.convert_to_tensor(points, tf.float32)
    n = tf.shape(points)[0]
    seed = tf.cast(seed, tf.int64)
    first = tf.random.stateless_uniform([], seed, maxval=n, dtype=tf.int32)
    centers = tf.TensorArray(tf.float32, size=k, element_shape=points.shape[1:])
    centers = centers.write(0, points[first])
    closest = tf.reduce_sum(tf.square(points - points[first]), axis=1)
    for i in tf.range(1, k):
        # Next center with probability proportional to the squared distance to the nearest one.
        u = tf.random.stateless_uniform([], seed + tf.cast(i, tf.int64) * 7919, dtype=tf.float32)
        cdf = tf.cumsum(closest) / tf.maximum(tf.reduce_sum(closest), 1e-12)
        pick = tf.minimum(tf.reduce_sum(tf.cast(cdf < u, tf.int32)), n - 1)
        centers = centers.write(i, points[pick])
        closest = tf.minimum(closest, tf.reduce_sum(tf.square(points - points[pick]), axis=1))
    return centers.stack()


def class_sums(points, labels, k):
    """Per-class sums [k, d] and counts [k] of `points` with `labels`."""
    onehot = tf.one_hot(labels, k, dtype=points.dtype)
    return tf.matmul(onehot, points, transpose_a=True), tf.reduce_sum(onehot, axis=0)


def minibatch_update(centers, counts, sums, batch_counts):
    """New (centers, counts): c_k <- c_k + (sum_k - n_k c_k) / (count_k + n_k)."""
    new_counts = counts + batch_counts
    step = (sums - batch_counts[:, None] * centers) / tf.maximum(new_counts, 1.0)[:, None]
    return centers + step, new_counts


def lloyd(points, centers, iterations):
    """`iterations` Lloyd steps from `centers`: (centers, labels, inertia). An empty
    cluster keeps its center."""
    points, centers = tf.convert_to_tensor(points, tf.float32), tf.convert_to_tensor(centers, tf.float32)
    for _ in range(iterations):
        labels, _ = assign(points, centers)
        sums, counts = class_sums(points, labels, centers.shape[0])
        centers = tf.where(counts[:, None] > 0, sums / tf.maximum(counts, 1.0)[:, None], centers)
    labels, distances = assign(points, centers)
    inertia = tf.reduce_sum(tf.reduce_min(distances, 1))
    return centers, labels, inertia


def fit(points, k, seed, iterations=10, restarts=1):
    """k-means++ seeding and Lloyd iterations, the lowest-inertia result of `restarts`
    seedings (each from its own stateless seed derived from `seed`): (centers, labels)."""
    seed = tf.cast(seed, tf.int64)
    best = None
    for restart in range(max(int(restarts), 1)):
        start = kmeans_plus_plus(points, k, seed + tf.constant([0, 104729], tf.int64) * restart)
        centers, labels, inertia = lloyd(points, start, iterations)
        if best is None or float(inertia) < float(best[2]):
            best = (centers, labels, inertia)
    return best[0], best[1]
