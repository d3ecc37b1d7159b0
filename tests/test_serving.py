"""The serving contract end to end: exported servables behind `serving.server` (and behind
`tensorflow_model_server` when that binary is on PATH), called with the official
tensorflow-serving-api stubs and with `serving.client` over gRPC and REST."""

import json
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from export import export_servables
from serving.client import ServingClientError, ZooClient
from serving.server import ModelServer
from trainers.local_cluster import free_ports
from zoo.ganem import GANEM

SHAPE = (8, 8, 1)
K = 3


@pytest.fixture(scope="module")
def model():
    return GANEM(SHAPE, K, latent_dim=5, embedding_dim=2, seed=3)


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    export_servables(model, base)
    return base


def _start_binary(base):
    grpc_port, rest_port = free_ports(2)
    process = subprocess.Popen(["tensorflow_model_server", f"--model_config_file={base / 'models.config'}",
                                f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                                "--file_system_poll_wait_seconds=1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            ZooClient("127.0.0.1", grpc_port, retries=0, timeout=2).metadata()
            break
        except ServingClientError:
            time.sleep(0.5)
    return process, grpc_port, rest_port


SERVERS = ["python"] + (["tensorflow_model_server"] if shutil.which("tensorflow_model_server") else [])


@pytest.fixture(scope="module", params=SERVERS)
def server(request, base):
    """(grpc port, rest port) of a server over `base`: ours, and TF Serving's binary if installed."""
    if request.param == "python":
        server = ModelServer(base / "models.config", port=0, rest_api_port=0, host="127.0.0.1",
                             poll_seconds=0.2).start()
        yield server.port, server.rest_port
        server.stop()
    else:
        process, grpc_port, rest_port = _start_binary(base)
        yield grpc_port, rest_port
        process.kill()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server[0]}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *SHAPE)).astype(np.float32)


def test_predict_with_the_official_stubs_matches_the_model(stubs, model):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ganem_enet"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images(4)))
    response = stubs[0].Predict(request, timeout=30)
    probs = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(probs, model.cluster_probs(images(4)), rtol=1e-5, atol=1e-6)
    assert tf.make_ndarray(response.outputs["cluster"]).dtype == np.int64
    assert response.model_spec.version.value == 1


@pytest.mark.parametrize("inputs, expected", [
    (lambda: images(2)[..., 0], "must have shape [N, 8, 8, 1]"),  # wrong rank
    (lambda: np.zeros((2, 8, 9, 1), np.float32), "must have shape [N, 8, 8, 1]"),  # wrong size
    (lambda: np.zeros((2, 8, 8, 1), np.int32), "float"),  # wrong dtype
])
def test_bad_images_are_invalid_argument_naming_the_shape(stubs, inputs, expected):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ganem_enet"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(inputs()))
    with pytest.raises(grpc.RpcError) as err:
        stubs[0].Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in err.value.details()


def test_cluster_ids_outside_the_range_are_rejected(stubs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "ganem_generator", "sample"
    request.inputs["cluster"].CopyFrom(tf.make_tensor_proto(np.array([0, K], np.int64)))
    request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.int64(1)))
    with pytest.raises(grpc.RpcError) as err:
        stubs[0].Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and f"[0, {K})" in err.value.details()


def test_classify_metadata_and_status(stubs, model):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "ganem_enet", "classify"
    for image in images(2):
        example = request.input.example_list.examples.add()
        example.features.feature["image"].float_list.value.extend(image.ravel().tolist())
    result = stubs[0].Classify(request, timeout=30).result
    assert len(result.classifications) == 2 and len(result.classifications[0].classes) == K
    scores = [[c.score for c in row.classes] for row in result.classifications]
    np.testing.assert_allclose(scores, model.cluster_probs(images(2)), rtol=1e-5, atol=1e-6)

    metadata = stubs[0].GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "ganem_generator"}, metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "sample"} <= set(signatures.signature_def)
    assert set(signatures.signature_def["sample"].inputs) == {"cluster", "seed"}

    status = stubs[1].GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "ganem_enet"}),
                                     timeout=30)
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_the_client_gives_the_same_answers_over_grpc_and_rest(server, model, protocol):
    port = server[0] if protocol == "grpc" else server[1]
    client = ZooClient("127.0.0.1", port, model="ganem", protocol=protocol, max_batch=3)
    out = client.classify(images(7))  # three batches
    np.testing.assert_allclose(out["probabilities"], model.cluster_probs(images(7)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(client.embed(images(2)), model.embed(images(2)), rtol=1e-5, atol=1e-6)
    generated = client.sample(cluster=1, count=4, seed=5)
    assert generated.shape == (4, *SHAPE) and 0 <= generated.min() and generated.max() <= 1
    # One vocabulary: the in-process model draws the same samples and generates the same images.
    np.testing.assert_allclose(generated, model.sample(1, count=4, seed=5), rtol=1e-5, atol=1e-6)
    assert not np.allclose(generated, client.sample(cluster=1, count=4, seed=6))
    noise = model.sample_latent(3, seed=2)
    np.testing.assert_allclose(client.generate(noise.numpy(), [0, 1, 2]), model.generate(noise, tf.constant([0, 1, 2])),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(client.cluster_probs(images(2)), model.cluster_probs(images(2)), rtol=1e-5, atol=1e-6)
    with pytest.warns(DeprecationWarning, match="now sample"):
        np.testing.assert_allclose(client.generate(cluster=1, count=4, seed=5), generated)
    meta = client.metadata()
    assert meta["ganem_generator"]["signatures"]["sample"]["outputs"]["images"] == [-1, *SHAPE]
    assert meta["ganem_enet"]["signatures"]["serving_default"]["outputs"]["probabilities"] == [-1, K]
    assert meta["ganem_enet"]["signatures"]["serving_default"]["inputs"]["images"] == [-1, *SHAPE]
    assert meta["ganem_enet"]["version"] == 1
    with pytest.raises(ServingClientError) as err:
        client.sample(cluster=K, count=1)
    assert err.value.code == "INVALID_ARGUMENT"
    client.close()


def test_unavailable_is_retried_then_reported():
    (port,) = free_ports(1)
    client = ZooClient("127.0.0.1", port, retries=2, backoff=0.01, timeout=1)
    started = time.time()
    with pytest.raises(ServingClientError) as err:
        client.classify(images(1))
    assert err.value.code == "UNAVAILABLE" and time.time() - started < 20


def wait_until(condition, what, errors=(), seconds=60):
    """Polls `condition` until it holds; fails at once, with them, when `errors` has any, and
    after `seconds` with what it waited for."""
    deadline = time.time() + seconds
    while not condition():
        if errors:
            pytest.fail(f"while waiting for {what}: {len(errors)} failed requests, e.g. {errors[:3]}")
        if time.time() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.01)


def test_a_new_version_is_served_without_dropping_requests(model, tmp_path):
    base = tmp_path / "base"
    export_servables(model, base)
    server = ModelServer(base / "models.config", port=0, rest_api_port=None, host="127.0.0.1",
                         poll_seconds=0.1).start()
    client = ZooClient("127.0.0.1", server.port, retries=0)
    answers, errors, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                answers.append(client.classify(images(2))["probabilities"])
            except ServingClientError as err:  # pragma: no cover - the assertion below reports it
                errors.append(err)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(answers) >= 10, "the first 10 answers", errors)
    changed = GANEM(SHAPE, K, latent_dim=5, embedding_dim=2, seed=11)
    export_servables(changed, base)  # version 2, written aside and renamed into place
    wait_until(lambda: server.registry.get("ganem_enet").version == 2, "version 2 to be served", errors)
    answered = len(answers)
    wait_until(lambda: len(answers) >= answered + 10, "10 answers after the switch", errors)
    stop.set()
    for thread in threads:
        thread.join()
    server.stop()
    client.close()
    assert not errors, errors[:3]
    assert server.registry.get("ganem_enet").version == 2
    old, new = model.cluster_probs(images(2)).numpy(), changed.cluster_probs(images(2)).numpy()
    kinds = {("old" if np.allclose(a, old, atol=1e-5) else "new" if np.allclose(a, new, atol=1e-5) else "wrong")
             for a in answers}
    assert kinds == {"old", "new"}, kinds


def test_server_command_line_bad_config_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serving.server", "--model_config_file",
                             str(tmp_path / "missing.config"), "--port", "0"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("serving.server: error:")
    assert "does not exist" in result.stderr


def test_client_command_line_classifies_png_files(server, tmp_path):
    from PIL import Image

    paths = []
    for i, image in enumerate(images(2)):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    result = subprocess.run([sys.executable, "-m", "serving.client", "classify", "--host", "127.0.0.1", "--port",
                             str(server[0]), *paths], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["image"] for line in lines] == paths and all(0 <= line["cluster"] < K for line in lines)
