"""A reference classifier that judges generated samples.

Inception weights cannot be downloaded here, so every model's samples are judged
by a small classifier trained by the project on the dataset's *labelled* data. The
labels are used only for judging, never for clustering. From its outputs:

* quality   = mean top-class confidence of generated samples (`zoo.metrics.classifier_quality`);
* diversity = normalised entropy of their mean class distribution (`classifier_diversity`);
* FD-classifier = Frechet distance between its features of real and generated samples
  (`zoo.metrics.frechet_distance`). It is comparable only with itself (same dataset,
  same seed), and is *not* FID.

The classifier is trained once per (dataset contents, seed) and cached under
`zoo.cache.cache_dir() / "reference"`, written to a temporary file and renamed so a
crashed run never leaves a half-written one.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from zoo import metrics, networks
from zoo.cache import cache_dir
from zoo.data import DataError

# Bump when the architecture or training recipe changes: old cache entries are ignored.
RECIPE_VERSION = 1
# A narrow feature layer keeps FD's covariance well estimated from a few thousand samples.
FEATURE_DIM = 64


def _fingerprint(dataset, seed):
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(dataset.x, np.float32).tobytes())
    digest.update(np.ascontiguousarray(dataset.y, np.int64).tobytes())
    digest.update(f"{RECIPE_VERSION}:{seed}".encode())
    return digest.hexdigest()[:16]


class ReferenceClassifier:
    """Wraps a trained `networks.build_classifier` model (logits, 64-d features).

    Build it with `ReferenceClassifier.for_dataset(dataset)`; `held_out_accuracy`
    tells how far to trust it (accuracy on the 10% of the data kept out of training).
    """

    def __init__(self, network, num_classes, held_out_accuracy):
        self.network = network
        self.num_classes = int(num_classes)
        self.held_out_accuracy = float(held_out_accuracy)

    @classmethod
    def for_dataset(cls, dataset, seed=0, epochs=None, cache=True, verbose=False):
        """Trains (or loads from the cache) the reference classifier of a labelled `dataset`.

        Call it outside any tf.distribute strategy scope: it trains on one device.
        """
        if dataset.y is None or not dataset.num_classes:
            raise DataError(f"dataset {dataset.name!r} has no labels: generated samples cannot be judged "
                            "(quality, diversity and FD-classifier need a labelled dataset)")
        path = cache_dir() / "reference" / f"{_fingerprint(dataset, seed)}.keras"
        if cache and path.exists():
            info = json.loads(path.with_suffix(".json").read_text())
            network = keras.saving.load_model(path, compile=False)
            return cls(network, info["num_classes"], info["held_out_accuracy"])
        reference = cls._train(dataset, seed, epochs, verbose)
        if cache:
            reference._save(path, dataset)
        return reference

    @classmethod
    def _train(cls, dataset, seed, epochs, verbose):
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(dataset))
        held_out = order[: max(1, len(order) // 10)]
        train = order[len(held_out):]
        network = networks.build_classifier(dataset.input_shape, dataset.num_classes,
                                            embedding_dim=FEATURE_DIM, name="reference")
        logits_only = keras.Model(network.input, network.output[0])
        logits_only.compile(optimizer=keras.optimizers.Adam(1e-3),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            metrics=["accuracy"])
        # About 1,000 updates whatever the dataset size (held-out accuracy: digits 0.98, mnist5k 0.96-0.97).
        epochs = epochs or int(np.clip(1000 * 128 // max(len(train), 1), 5, 60))
        logits_only.fit(dataset.x[train], dataset.y[train], batch_size=128, epochs=epochs,
                        shuffle=True, verbose=2 if verbose else 0)
        _, accuracy = logits_only.evaluate(dataset.x[held_out], dataset.y[held_out], verbose=0)
        return cls(network, dataset.num_classes, accuracy)

    def _save(self, path, dataset):
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"dataset": dataset.name, "num_classes": self.num_classes,
                "held_out_accuracy": self.held_out_accuracy, "recipe_version": RECIPE_VERSION}
        for target, write in ((path.with_suffix(".json"), lambda p: Path(p).write_text(json.dumps(info))),
                              (path, lambda p: self.network.save(p))):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=target.suffix)
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    # -- judging ----------------------------------------------------------------------
    def _outputs(self, images, batch_size=500):
        images = np.asarray(images, np.float32)
        logits, features = [], []
        for start in range(0, len(images), batch_size):
            lo, fe = self.network(images[start:start + batch_size], training=False)
            logits.append(np.asarray(lo))
            features.append(np.asarray(fe))
        return np.concatenate(logits), np.concatenate(features)

    def probs(self, images):
        """[N, *shape] -> [N, C] class probabilities."""
        logits, _ = self._outputs(images)
        return np.asarray(keras.ops.softmax(logits, axis=-1), np.float64)

    def features(self, images):
        """[N, *shape] -> [N, 64] features of the layer before the class head."""
        return self._outputs(images)[1]

    def scores(self, generated, real):
        """Quality, diversity, FD-classifier and the class histogram of `generated` samples."""
        logits, fake_features = self._outputs(generated)
        probs = np.asarray(keras.ops.softmax(logits, axis=-1), np.float64)
        histogram = np.bincount(probs.argmax(axis=1), minlength=self.num_classes) / len(probs)
        return {
            "quality": metrics.classifier_quality(probs),
            "diversity": metrics.classifier_diversity(probs),
            "fd_classifier": metrics.frechet_distance(self.features(real), fake_features),
            "class_histogram": [float(v) for v in histogram],
            "reference_held_out_accuracy": self.held_out_accuracy,
        }
