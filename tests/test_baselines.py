"""zoo.baselines: classical baselines reach high ACC on easy blobs; summarize is exact."""
import numpy as np
import pytest

from zoo import baselines as B
from zoo.data import load_dataset

SPEC = "synthetic:clusters=4,samples=800,dim=20"


@pytest.fixture(scope="module")
def blobs():
    return load_dataset(SPEC, seed=0)


@pytest.mark.parametrize("name", sorted(B.BASELINES))
def test_baseline_separates_blobs(blobs, name):
    labels = B.BASELINES[name](blobs.x, 4, 0)
    assert labels.shape == (len(blobs),) and labels.dtype == np.int64
    from zoo.metrics import clustering_report

    assert clustering_report(blobs.y, labels, 4)["acc"] > 0.9


@pytest.mark.parametrize("name", sorted(B.BASELINES))
def test_baseline_deterministic_per_seed(blobs, name):
    fn = B.BASELINES[name]
    np.testing.assert_array_equal(fn(blobs.x, 4, 3), fn(blobs.x, 4, 3))


def test_gmm_pca_clamps_components():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (10, 3))]).astype(np.float32)
    labels = B.gmm_pca(x, 2, seed=0, components=50)  # 50 > D=3: uses 3 dims
    assert len(np.unique(labels[:10])) == 1 and len(np.unique(labels[10:])) == 1
    assert labels[0] != labels[-1]


def test_summarize_mean_and_population_std():
    reports = [
        {"acc": 0.5, "nmi": 0.2, "ari": 0.1, "purity": 0.6, "many_to_one_acc": 0.6},
        {"acc": 0.7, "nmi": 0.4, "ari": 0.3, "purity": 0.8, "many_to_one_acc": 0.8},
        {"acc": 0.9, "nmi": 0.6, "ari": 0.5, "purity": 1.0, "many_to_one_acc": 1.0},
    ]
    s = B.summarize(reports)
    assert s["acc_mean"] == pytest.approx(0.7)
    assert s["acc_std"] == pytest.approx(np.sqrt(((0.2 ** 2) * 2) / 3))  # population std
    assert s["nmi_mean"] == pytest.approx(0.4)
    assert s["ari_std"] == pytest.approx(s["acc_std"])
    assert s["purity_mean"] == pytest.approx(0.8)
    assert set(s) == {f"{k}_{m}" for k in B.SUMMARY_KEYS for m in ("mean", "std")}
    one = B.summarize([{"acc": 0.3}], keys=("acc", "wall_seconds"))
    assert one == {"acc_mean": pytest.approx(0.3), "acc_std": 0.0}


def test_run_baselines_structure(blobs):
    res = B.run_baselines(blobs, 4, seeds=[0, 1], baselines={"kmeans_pixels": B.kmeans_pixels})
    r = res["kmeans_pixels"]
    assert len(r["per_seed"]) == 2 and [p["seed"] for p in r["per_seed"]] == [0, 1]
    for key in ("acc", "nmi", "ari", "purity", "wall_seconds"):
        assert f"{key}_mean" in r and f"{key}_std" in r
    assert r["acc_mean"] == pytest.approx(np.mean([p["acc"] for p in r["per_seed"]]))
