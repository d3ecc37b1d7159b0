"""SavedModels in TensorFlow Serving layout for any model of the zoo.

For a model named M (its `zoo_name`), `export_servables(model, base)` writes

    base/M_enet/<version>/        E-net classifier: serving_default, classify
    base/M_generator/<version>/   conditional generator: serving_default, sample
    base/models.config            model_config_list naming every servable under base

Both servables of a version are written to one staging directory, flushed to disk, and
renamed into place together (the first rename is undone if the second fails), so a server
watching `base` never sees a half-written model; readers of the zoo (`serving.server`,
`zoo.load`) only take a version that both servables have. A re-export adds version + 1.
Signatures declare their shapes ([-1, H, W, C] images, [-1, z] noise, [-1] clusters) for
metadata readers, and still check them in the graph with a message naming the shape.
Every version carries `assets.extra/zoo.json` (what the model is) and
`assets.extra/tf_serving_warmup_requests` (requests TF Serving replays on load).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

import zoo
from zoo.hub import VERSION_NAME

CLASSIFY_METHOD = "tensorflow/serving/classify"
IMAGE_FEATURE = "image"


def _check_shape(tensor, expected, what):
    """Fails with INVALID_ARGUMENT naming the expected shape when `tensor` does not fit."""
    expected_text = "[" + ", ".join(["N"] + [str(d) for d in expected]) + "]"
    shape = tf.shape(tensor)
    # Pad so that a tensor of too low a rank still has len(expected) inner dims to compare.
    inner = tf.concat([shape, tf.zeros([len(expected) + 1], tf.int32)], 0)[1 : len(expected) + 1]
    ok = tf.logical_and(tf.equal(tf.size(shape), len(expected) + 1), tf.reduce_all(tf.equal(inner, expected)))
    return tf.debugging.Assert(ok, [f"{what} must have shape {expected_text}; got shape", shape])


def _check_clusters(cluster, num_clusters):
    ok = tf.reduce_all(tf.logical_and(cluster >= 0, cluster < num_clusters))
    return tf.debugging.Assert(ok, [f"cluster ids must lie in [0, {num_clusters}); got", cluster])


class _Servable(tf.Module):
    """A servable that saves only the variables its signatures read.

    The model is held outside TensorFlow's object tracking: tracked, it would bring every
    network and optimizer slot of the model into each SavedModel (GAN-EM: about 300 MB per
    servable, where the E-net alone is about 26 MB). `track_used_variables` tracks instead
    what the traced signatures capture."""

    def __init__(self, name, model):
        super().__init__(name=name)
        object.__setattr__(self, "model", model)  # bypasses tracking on purpose

    def track_used_variables(self, *functions):
        used = {}
        for function in functions:
            for variable in function.get_concrete_function().variables:
                used.setdefault(id(variable), variable)
        self.used_variables = list(used.values())


class EnetServable(_Servable):
    """images -> probabilities, cluster, embedding; and the Classify API on tf.Examples."""

    def __init__(self, model):
        super().__init__(f"{model.zoo_name}_enet", model)
        self.data_shape = list(model.data_shape)
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, *self.data_shape], tf.float32, name="images")])
        self.classify = tf.function(
            self._classify, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        self.track_used_variables(self.serve, self.classify)

    def _serve(self, images):
        with tf.control_dependencies([_check_shape(images, self.data_shape, "images")]):
            images = tf.identity(images)
        images = tf.ensure_shape(images, [None, *self.data_shape])
        probabilities = self.model.cluster_probs(images)
        return {
            "probabilities": probabilities,
            "cluster": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
            "embedding": self.model.embed(images),
        }

    def _classify(self, inputs):
        size = int(np.prod(self.data_shape))
        features = tf.io.parse_example(inputs, {IMAGE_FEATURE: tf.io.FixedLenFeature([size], tf.float32)})
        images = tf.reshape(features[IMAGE_FEATURE], [-1, *self.data_shape])
        scores = self.model.cluster_probs(images)
        k = self.model.num_clusters
        classes = tf.tile(tf.strings.as_string(tf.range(k))[None, :], [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}


class GeneratorServable(_Servable):
    """(noise, cluster) -> images; and `sample`: (cluster, seed) -> images with the noise drawn in-graph."""

    def __init__(self, model):
        super().__init__(f"{model.zoo_name}_generator", model)
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, model.latent_dim], tf.float32, name="noise"),
            tf.TensorSpec([None], tf.int64, name="cluster")])
        sample_inputs = [tf.TensorSpec([None], tf.int64, name="cluster"), tf.TensorSpec([], tf.int64, name="seed")]
        # A model whose latent spread can be scaled at sampling time (GM-GAN's quality /
        # diversity trade-off) declares `samples_with_scale = True`; its `sample` takes `scale`.
        if getattr(model, "samples_with_scale", False):
            sample_inputs.append(tf.TensorSpec([], tf.float32, name="scale"))
        self.sample = tf.function(self._sample, input_signature=sample_inputs)
        self.track_used_variables(self.serve, self.sample)

    def _serve(self, noise, cluster):
        checks = [_check_shape(noise, [self.model.latent_dim], "noise"),
                  _check_clusters(cluster, self.model.num_clusters),
                  tf.debugging.assert_equal(tf.shape(noise)[0], tf.shape(cluster)[0],
                                            message="noise and cluster must have the same length N")]
        with tf.control_dependencies(checks):
            noise = tf.ensure_shape(tf.identity(noise), [None, self.model.latent_dim])
        return {"images": self.model.generate(noise, tf.cast(cluster, tf.int32))}

    def _sample(self, cluster, seed, scale=None):
        checks = [_check_clusters(cluster, self.model.num_clusters)]
        if scale is not None:
            checks.append(tf.debugging.assert_non_negative(scale, message="scale must be >= 0"))
        with tf.control_dependencies(checks):
            cluster = tf.cast(tf.identity(cluster), tf.int32)
        noise = self.model.sample_latent(tf.shape(cluster)[0], seed=seed)
        if scale is None:
            return {"images": self.model.generate(noise, cluster)}
        return {"images": self.model.generate(noise, cluster, scale=scale)}


def next_version(model_dir):
    """1 + the highest version under `model_dir`, complete or not (never reuse a number)."""
    versions = [int(p.name) for p in Path(model_dir).glob("*") if VERSION_NAME.fullmatch(p.name)]
    return max(versions, default=0) + 1


def _fsync_tree(root):
    """Flushes every file and directory under `root` (and `root` itself) to disk, so that a
    rename published after it never points at data still in the page cache."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(directory)


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_servables(model, base_dir, metadata=None, version=None):
    """Writes the E-net classifier and the conditional generator of `model` under
    `base_dir` in TF Serving layout; returns {servable name: version directory}."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "model": model.zoo_name,
        "clusters": model.num_clusters,
        "input_shape": list(model.data_shape),
        "latent_dim": model.latent_dim,
        "embedding_dim": model.embedding_size,
        "config": model.get_config(),
        "project_version": zoo.__version__,
        **(metadata or {}),
    }
    kinds = (("enet", EnetServable(model)), ("generator", GeneratorServable(model)))
    names = [f"{model.zoo_name}_{kind}" for kind, _ in kinds]
    # One version number for both servables, above anything either has.
    target_version = version or max(next_version(base_dir / name) for name in names)
    targets = {name: base_dir / name / str(target_version) for name in names}
    for target in targets.values():
        if target.exists():
            raise FileExistsError(f"{target} exists: versions are never overwritten")
    staging = Path(tempfile.mkdtemp(prefix=f".{model.zoo_name}-export-", dir=base_dir))
    placed = []
    try:
        for (kind, servable), name in zip(kinds, names):
            signatures = ({"serving_default": servable.serve, "classify": servable.classify} if kind == "enet"
                          else {"serving_default": servable.serve, "sample": servable.sample})
            path = staging / name
            tf.saved_model.save(servable, str(path), signatures=signatures)
            if kind == "enet":
                _set_method_name(path, "classify", CLASSIFY_METHOD)
            extra = path / "assets.extra"
            extra.mkdir(exist_ok=True)
            described = {**info, "servable": name, "kind": kind, "version": target_version}
            (extra / "zoo.json").write_text(json.dumps(described, indent=2, default=str) + "\n")
            _write_warmup(extra / "tf_serving_warmup_requests", name, kind, model)
        _fsync_tree(staging)
        for name in names:
            targets[name].parent.mkdir(parents=True, exist_ok=True)
        # The generator first: a reader that saw only the E-net would have nothing to pair
        # it with. If the second rename fails, the first is undone: both or neither.
        try:
            for name in reversed(names):
                os.rename(staging / name, targets[name])  # atomic on one file system
                placed.append(name)
        except OSError:
            for name in placed:
                os.rename(targets[name], staging / name)
            raise
        for name in names:
            _fsync_dir(targets[name].parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_model_config(base_dir)
    return targets


def _set_method_name(saved_model_dir, signature, method_name):
    """tf.saved_model.save marks every signature as Predict; TF Serving's Classify API
    needs the classify method name on the `classify` signature."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(saved_model_dir) / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(path.read_bytes())
    for meta_graph in proto.meta_graphs:
        meta_graph.signature_def[signature].method_name = method_name
    path.write_bytes(proto.SerializeToString())


def _write_warmup(path, name, kind, model):
    """A few PredictionLog records; TF Serving runs them before it marks a version AVAILABLE."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default"))
    if kind == "enet":
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, *model.data_shape), np.float32)))
    else:
        request.inputs["noise"].CopyFrom(tf.make_tensor_proto(np.zeros((1, model.latent_dim), np.float32)))
        request.inputs["cluster"].CopyFrom(tf.make_tensor_proto(np.zeros((1,), np.int64)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def write_model_config(base_dir):
    """models.config (text model_config_list) naming every servable directory under base_dir."""
    base_dir = Path(base_dir)
    entries = []
    for model_dir in sorted(p for p in base_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(VERSION_NAME.fullmatch(v.name) for v in model_dir.iterdir()):
            entries.append(
                "  config {\n"
                f"    name: \"{model_dir.name}\"\n"
                f"    base_path: \"{model_dir.resolve()}\"\n"
                "    model_platform: \"tensorflow\"\n"
                "  }\n"
            )
    text = "model_config_list {\n" + "".join(entries) + "}\n"
    fd, tmp = tempfile.mkstemp(prefix=".models.config-", dir=base_dir)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, base_dir / "models.config")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(base_dir)
    return base_dir / "models.config"
