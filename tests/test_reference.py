"""The reference classifier that judges generated samples (zoo/reference.py)."""

import os

import numpy as np
import pytest

from zoo.cache import cache_dir
from zoo.data import DataError, Dataset, load_dataset
from zoo.reference import ReferenceClassifier


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    # A private cache, restored afterwards so other tests see the user's setting.
    saved = os.environ.get("ZOO_CACHE_DIR")
    os.environ["ZOO_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield ReferenceClassifier.for_dataset(digits, seed=0)
    if saved is None:
        os.environ.pop("ZOO_CACHE_DIR")
    else:
        os.environ["ZOO_CACHE_DIR"] = saved


def test_it_classifies_held_out_digits(reference):
    assert reference.held_out_accuracy > 0.9


def test_real_data_scores_high_and_diverse(reference, digits):
    order = np.random.default_rng(0).permutation(len(digits))
    scores = reference.scores(digits.x[order[:600]], digits.x[order[600:1200]])
    assert scores["quality"] > 0.9
    assert scores["diversity"] > 0.95
    assert len(scores["class_histogram"]) == 10
    assert abs(sum(scores["class_histogram"]) - 1) < 1e-6


def test_one_class_samples_have_low_diversity_and_a_larger_fd(reference, digits):
    order = np.random.default_rng(1).permutation(len(digits))
    real_a, real_b = digits.x[order[:600]], digits.x[order[600:1200]]
    ones = digits.x[digits.y == 1]
    collapsed = reference.scores(ones, real_b)
    matched = reference.scores(real_a, real_b)
    assert collapsed["diversity"] < 0.3
    assert collapsed["class_histogram"][1] > 0.9
    assert collapsed["fd_classifier"] > 5 * matched["fd_classifier"]
    noise = np.random.default_rng(2).uniform(size=real_a.shape).astype(np.float32)
    assert reference.scores(noise, real_b)["fd_classifier"] > 5 * matched["fd_classifier"]


def test_cached_classifier_gives_the_same_answers(reference, digits):
    again = ReferenceClassifier.for_dataset(digits, seed=0)
    np.testing.assert_allclose(again.probs(digits.x[:50]), reference.probs(digits.x[:50]), atol=1e-5)
    assert again.held_out_accuracy == reference.held_out_accuracy

    left = [p for p in os.listdir(cache_dir() / "reference") if p.startswith(".tmp")]
    assert not left, f"temporary files left in the cache: {left}"


def test_unlabelled_data_is_refused():
    data = Dataset("blobs", np.zeros((20, 4), np.float32), None, "vectors", None)
    with pytest.raises(DataError, match="no labels"):
        ReferenceClassifier.for_dataset(data)
