"""Export: TF Serving layout, signatures, validation, versions; reloaded SavedModels
give the in-memory model's outputs."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from export import export_servables
from zoo.ganem import GANEM

SHAPE = (8, 8, 1)


def assert_same_clusters(probs, clusters, margin=1e-5):
    """argmax `probs` equals `clusters` wherever the top two probabilities are further apart
    than `margin`: two compute paths (batch sizes, graphs, CPUs) may round a near-tie apart."""
    probs = np.asarray(probs)
    top2 = np.sort(probs, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > margin
    np.testing.assert_array_equal(np.argmax(probs, 1)[decided], np.asarray(clusters)[decided])
    assert decided.mean() > 0.9, f"only {decided.mean():.0%} of the samples are clear of a near-tie"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = GANEM(SHAPE, 3, latent_dim=5, embedding_dim=2, seed=2)
    base = tmp_path_factory.mktemp("export")
    paths = export_servables(model, base, metadata={"dataset": "unit-test", "metrics": {"acc": 0.5}})
    return model, base, paths


def test_layout_config_and_metadata(exported):
    model, base, paths = exported
    assert paths == {"ganem_enet": base / "ganem_enet" / "1", "ganem_generator": base / "ganem_generator" / "1"}
    for path in paths.values():
        assert (path / "saved_model.pb").exists() and (path / "variables").is_dir()
        info = json.loads((path / "assets.extra" / "zoo.json").read_text())
        assert info["model"] == "ganem" and info["clusters"] == 3 and info["input_shape"] == list(SHAPE)
        assert info["latent_dim"] == 5 and info["dataset"] == "unit-test" and info["metrics"]["acc"] == 0.5
        records = list(tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests")))
        log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
        assert log.predict_log.request.model_spec.name == path.parent.name
    config = (base / "models.config").read_text()
    assert config.count("config {") == 2 and 'name: "ganem_enet"' in config and 'name: "ganem_generator"' in config
    assert not [p for p in base.iterdir() if p.name.startswith(".")], "staging directories left behind"


def test_enet_matches_in_memory_model(exported):
    model, _, paths = exported
    loaded = tf.saved_model.load(str(paths["ganem_enet"]))
    images = tf.random.uniform((5, *SHAPE), seed=1)
    out = loaded.signatures["serving_default"](images=images)
    np.testing.assert_allclose(out["probabilities"], model.cluster_probs(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["embedding"], model.embed(images), rtol=1e-5, atol=1e-6)
    assert out["embedding"].shape == (5, 2)
    assert out["cluster"].dtype == tf.int64
    assert_same_clusters(model.cluster_probs(images), out["cluster"])


def test_classify_signature_reads_tf_examples(exported):
    model, _, paths = exported
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((paths["ganem_enet"] / "saved_model.pb").read_bytes())
    assert proto.meta_graphs[0].signature_def["classify"].method_name == "tensorflow/serving/classify"
    loaded = tf.saved_model.load(str(paths["ganem_enet"]))
    images = np.random.default_rng(0).uniform(size=(2, *SHAPE)).astype(np.float32)
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(float_list=tf.train.FloatList(value=img.ravel()))})).SerializeToString()
        for img in images]
    out = loaded.signatures["classify"](inputs=tf.constant(examples))
    np.testing.assert_allclose(out["scores"], model.cluster_probs(images), rtol=1e-5, atol=1e-6)
    assert out["classes"].numpy()[0].tolist() == [b"0", b"1", b"2"]


def test_generator_matches_in_memory_model(exported):
    model, _, paths = exported
    loaded = tf.saved_model.load(str(paths["ganem_generator"]))
    noise = model.sample_latent(4, seed=3)
    cluster = tf.constant([0, 1, 2, 1], tf.int64)
    out = loaded.signatures["serving_default"](noise=noise, cluster=cluster)
    np.testing.assert_allclose(out["images"], model.generate(noise, cluster), rtol=1e-5, atol=1e-6)
    sampled = loaded.signatures["sample"](cluster=cluster, seed=tf.constant(3, tf.int64))["images"]
    np.testing.assert_allclose(sampled, out["images"], rtol=1e-5, atol=1e-6)


def test_signatures_reject_bad_input_naming_the_expected_shape(exported):
    _, _, paths = exported
    enet = tf.saved_model.load(str(paths["ganem_enet"])).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must have shape \[N, 8, 8, 1\]"):
        enet(images=tf.zeros((2, 28, 28, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must have shape"):
        enet(images=tf.zeros((64,)))
    generator = tf.saved_model.load(str(paths["ganem_generator"])).signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"noise must have shape \[N, 5\]"):
        generator["serving_default"](noise=tf.zeros((2, 7)), cluster=tf.constant([0, 1], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"cluster ids must lie in \[0, 3\)"):
        generator["sample"](cluster=tf.constant([0, 3], tf.int64), seed=tf.constant(0, tf.int64))


def test_reexport_adds_a_version_and_never_overwrites(exported):
    model, base, _ = exported
    paths = export_servables(model, base)
    assert paths["ganem_enet"] == base / "ganem_enet" / "2"
    assert (base / "ganem_enet" / "1" / "saved_model.pb").exists()
    with pytest.raises(FileExistsError):
        export_servables(model, base, version=1)
    assert (base / "models.config").read_text().count("config {") == 2


def test_export_command_rebuilds_a_checkpointed_run(tmp_path):
    import subprocess
    import sys

    from test_trainer_cli import SMALL, run_trainer

    run_dir = tmp_path / "run"
    assert run_trainer(*SMALL, "--max-steps", "6", "--run-dir", str(run_dir), "--no-export").returncode == 0
    out = tmp_path / "served"
    result = subprocess.run([sys.executable, "-m", "export", "--run", str(run_dir), "--out", str(out), "--hub",
                             "--preset"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "ganem_enet" / "1" / "saved_model.pb").exists() and (out / "ganem.tar.gz").stat().st_size > 0
    info = json.loads((out / "ganem_enet" / "1" / "assets.extra" / "zoo.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert info["metrics"]["acc"] == metrics["acc"] and info["dataset"] == "digits"
    # The exported E-net reproduces the run's clustering of its data.
    from zoo.data import load_dataset

    x = load_dataset("digits").x
    enet = tf.saved_model.load(str(out / "ganem_enet" / "1")).signatures["serving_default"]
    probs = enet(images=tf.constant(x))["probabilities"].numpy()
    clusters = probs.argmax(1)
    run_clusters = np.loadtxt(run_dir / "assignments.csv", delimiter=",", skiprows=1, usecols=1, dtype=int)
    assert np.bincount(run_clusters, minlength=10).tolist() == metrics["cluster_sizes"]  # the run's own record
    assert_same_clusters(probs, run_clusters)
    # The Keras preset and the tarball load back through zoo.load and cluster the same way.
    import zoo

    for handle in (out / "ganem_preset", f"file://{out / 'ganem.tar.gz'}"):
        loaded = zoo.load(handle)
        assert_same_clusters(loaded.cluster_probs(x[:200]), clusters[:200])
    bad = subprocess.run([sys.executable, "-m", "export", "--run", str(tmp_path), "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_each_servable_saves_only_the_network_it_serves(tmp_path):
    """The E-net SavedModel holds the E-net's weights and the generator's the generator's:
    not the other networks, and no optimizer slots."""
    model = GANEM(SHAPE, 3, latent_dim=5, embedding_dim=2, seed=2)
    model.compile()  # builds the three optimizers, whose slots double the model's variables
    paths = export_servables(model, tmp_path)

    def saved_values(path):
        entries = tf.train.list_variables(str(path / "variables" / "variables"))
        return sum(int(np.prod(shape)) for name, shape in entries if "OBJECT_GRAPH" not in name)

    assert saved_values(paths["ganem_enet"]) == model.enet.count_params()
    assert saved_values(paths["ganem_generator"]) == model.generator.count_params()
