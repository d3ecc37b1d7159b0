"""serving.server under hostile or broken input: every request is checked against the
declared signature before anything its size is allocated, REST connections and bodies are
bounded, model calls in flight are bounded while status stays answered, and the version
poller survives whatever it finds on disk. Everything on 127.0.0.1, every loop bounded."""

import json
import re
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from export import export_servables
from serving import server as server_module
from serving.server import ModelServer
from zoo.ganem import GANEM

SHAPE = (8, 8, 1)
K = 3
MAX_BATCH = 8


@pytest.fixture(scope="module")
def model():
    return GANEM(SHAPE, K, latent_dim=5, embedding_dim=2, seed=3)


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving-limits")
    export_servables(model, base)
    return base


@pytest.fixture(scope="module")
def server(base):
    server = ModelServer(base / "models.config", port=0, rest_api_port=0, poll_seconds=0.2, workers=2,
                         max_batch_size=MAX_BATCH, max_request_bytes=1 << 20).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def _predict_error(stub, name, signature, inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = name, signature
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    return err.value


def _proto(dtype, dims, **values):
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]), **values)


def test_listens_on_127_0_0_1_by_default(server):
    assert server.http.server_address[0] == "127.0.0.1"
    parser_default = server_module.parse_args(["--model_config_file", "x"]).host
    assert parser_default == "127.0.0.1"


def test_declared_shapes_reach_metadata_readers(stubs, server):
    response = stubs[0].GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "ganem_enet"}, metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    images = signatures.signature_def["serving_default"].inputs["images"].tensor_shape
    assert not images.unknown_rank and [d.size for d in images.dim] == [-1, *SHAPE]


@pytest.mark.parametrize("name, signature, inputs, expected", [
    # One value declared as 2^31 clusters: make_ndarray would pad it out to 16 GiB.
    ("ganem_generator", "sample", {"cluster": _proto(types_pb2.DT_INT64, [1 << 31], int64_val=[0]),
                                   "seed": _proto(types_pb2.DT_INT64, [], int64_val=[1])}, "--max_batch_size"),
    ("ganem_enet", "serving_default", {"images": _proto(types_pb2.DT_FLOAT, [1 << 40, 8, 8, 1], float_val=[0.5])},
     "--max_batch_size"),
    ("ganem_enet", "serving_default", {"images": _proto(types_pb2.DT_FLOAT, [2, 1 << 40, 8, 1], float_val=[0.5])},
     "must have shape [N, 8, 8, 1]"),
    ("ganem_enet", "serving_default", {"images": _proto(types_pb2.DT_DOUBLE, [1, 8, 8, 1], double_val=[0.5])},
     "must be float32"),
    ("ganem_enet", "serving_default", {"images": _proto(types_pb2.DT_FLOAT, [1, 8, 8, 1], tensor_content=b"abc")},
     "tensor_content holds 3 bytes"),
    ("ganem_enet", "serving_default", {"images": _proto(types_pb2.DT_FLOAT, [1, 8, 8, 1], float_val=[0.5] * 65)},
     "carries 65 values"),
    ("ganem_enet", "serving_default", {"images": _proto(types_pb2.DT_FLOAT, [1, 8, 8, 1], float_val=[0.5]),
                                       "extra": _proto(types_pb2.DT_FLOAT, [1], float_val=[0.5])}, "unknown"),
    ("ganem_generator", "serving_default", {"noise": _proto(types_pb2.DT_FLOAT, [MAX_BATCH + 1, 5]),
                                            "cluster": _proto(types_pb2.DT_INT64, [MAX_BATCH + 1])},
     f"at most {MAX_BATCH}"),
])
def test_requests_are_checked_before_they_are_converted(stubs, name, signature, inputs, expected):
    started = time.monotonic()
    err = _predict_error(stubs[0], name, signature, inputs)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in err.details(), err.details()
    assert "\n" not in err.details() and time.monotonic() - started < 10


def test_a_version_zero_request_is_not_the_newest(stubs):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "ganem_enet"
    request.model_spec.version.value = 0
    with pytest.raises(grpc.RpcError) as err:
        stubs[1].GetModelStatus(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_classify_batches_are_capped(stubs):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "ganem_enet", "classify"
    for _ in range(MAX_BATCH + 1):
        request.input.example_list.examples.add().features.feature["image"].float_list.value.extend([0.0] * 64)
    with pytest.raises(grpc.RpcError) as err:
        stubs[0].Classify(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "--max_batch_size" in err.value.details()


def test_busy_model_calls_are_refused_while_status_still_answers(stubs, server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ganem_enet"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, *SHAPE), np.float32)))
    taken = []
    try:
        for _ in range(server.admission.limit):  # every model-call slot held, as by slow requests
            taken.append(server.admission.__enter__())
        with pytest.raises(grpc.RpcError) as err:
            stubs[0].Predict(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = stubs[1].GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "ganem_enet"}), timeout=10)
        assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    finally:
        for slot in taken:
            slot.__exit__(None, None, None)
    assert stubs[0].Predict(request, timeout=30).outputs["cluster"].int64_val


def test_unexpected_errors_are_internal_without_python_details(stubs, server, monkeypatch):
    servable = server.registry.get("ganem_enet")

    def broken(*args, **kwargs):
        raise KeyError("a python detail")

    monkeypatch.setattr(servable, "run", broken)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ganem_enet"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, *SHAPE), np.float32)))
    with pytest.raises(grpc.RpcError) as err:
        stubs[0].Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INTERNAL and "python detail" not in err.value.details()


# -- REST --------------------------------------------------------------------------------------
def _connect(server):
    sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    return sock


def _response(sock):
    """(status, json body or None) of one HTTP response read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), json.loads(body[:length]) if length else None


def _post(path, body, extra_headers=""):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra_headers}\r\n").encode() + body


STATUS = b"GET /v1/models/ganem_enet HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("body, expected", [
    (b"[1, 2]", "JSON object"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply|JSON object"),
    (b"{not json", "not JSON"),
    ({"instances": [[[[0.0]] * 8] * 8, [[[0.0]] * 8] * 7]}, "same-length rows"),  # ragged
    ({"instances": [{"images": [[[0.0]] * 8] * 8}, {"other": 1}]}, "same keys"),
    ({"instances": "abc"}, "list of rows"),
    ({"signature_name": 5, "instances": []}, "signature_name"),
    ({"inputs": {"images": [[[[0.0]] * 9] * 8]}}, r"must have shape \[N, 8, 8, 1\]"),
    ({"inputs": {"images": np.zeros((MAX_BATCH + 1, *SHAPE)).tolist()}}, "--max_batch_size"),
])
def test_rest_bad_bodies_are_400_and_the_connection_stays_in_step(server, body, expected):
    with _connect(server) as sock:
        sock.sendall(_post("/v1/models/ganem_enet:predict", body))
        status, answer = _response(sock)
        assert status == 400 and re.search(expected, answer["error"]), answer
        sock.sendall(STATUS)
        assert _response(sock)[0] == 200


def test_rest_errors_before_the_body_never_leave_it_as_the_next_request(server):
    with _connect(server) as sock:
        # The body of a refused request is itself a well-formed request: it must not be answered.
        sock.sendall(_post("/v1/models/no_such_model:predict", STATUS))
        assert _response(sock)[0] == 404
        sock.sendall(_post("/v1/models/ganem_enet/versions/abc:predict", STATUS))
        assert _response(sock)[0] == 400
        sock.sendall(b"GET /v1/models/ganem_enet/versions/abc HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(sock)[0] == 400
        sock.sendall(STATUS)
        assert _response(sock) == (200, _response_of_status(server))
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing else queued on the connection
            sock.recv(1)


def _response_of_status(server):
    version = str(server.registry.get("ganem_enet").version)
    return {"model_version_status": [{"version": version, "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.mark.parametrize("headers, expected", [
    ("Content-Length: -1\r\n", "not a byte count"),
    ("Content-Length: 99999999999\r\n", "larger than"),
    ("Transfer-Encoding: chunked\r\n", "chunked"),
    ("", "needs Content-Length"),
])
def test_rest_bad_lengths_are_refused_and_the_connection_closed(server, headers, expected):
    with _connect(server) as sock:
        sock.sendall(f"POST /v1/models/ganem_enet:predict HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        status, answer = _response(sock)
        assert status == 400 and expected in answer["error"]
        assert sock.recv(1) == b""  # closed by the server


def test_rest_idle_slow_and_excess_connections_are_bounded(base, monkeypatch):
    # Short timeouts on a server of its own: the other tests' connections must not time out
    # on a busy machine.
    monkeypatch.setattr(server_module, "REST_IDLE_SECONDS", 1.0)
    monkeypatch.setattr(server_module, "REST_BODY_SECONDS", 2.0)
    server = ModelServer(base / "models.config", port=0, rest_api_port=0, rest_max_connections=4).start()
    try:
        _idle_slow_and_excess(server)
    finally:
        server.stop()


def _idle_slow_and_excess(server):
    idle = [_connect(server) for _ in range(4)]  # the cap of this server
    try:
        with _connect(server) as extra:
            assert _response(extra)[0] == 503  # refused at once, no thread spent
        assert _connection_threads() <= 4 + 2  # these four, and at most a couple still ending elsewhere
        for sock in idle:  # the server closes each once it has idled past its timeout
            sock.settimeout(10)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    with _connect(server) as sock:  # a body trickled slower than the deadline allows
        sock.sendall(b"POST /v1/models/ganem_enet:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        deadline = time.monotonic() + 10
        status = None
        while status is None and time.monotonic() < deadline:
            try:
                sock.sendall(b" ")
            except OSError:
                break
            sock.settimeout(0.5)
            try:
                status, answer = _response(sock)
                break
            except TimeoutError:
                continue
        assert status == 400 and "within" in answer["error"]
    with _connect(server) as sock:
        sock.sendall(STATUS)
        assert _response(sock)[0] == 200


def _connection_threads():
    import threading

    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


# -- versions on disk ----------------------------------------------------------------------------
def test_the_poller_survives_odd_names_errors_and_broken_versions(model, tmp_path, monkeypatch, capsys):
    base = tmp_path / "base"
    export_servables(model, base)
    registry = server_module.ModelRegistry(server_module.read_model_config(base / "models.config"), poll_seconds=0.05)
    (base / "ganem_enet" / "\u00b2").mkdir()  # passes str.isdigit, fails int()
    (base / "ganem_enet" / "\u00b2" / "saved_model.pb").write_bytes(b"")
    for name in ("ganem_enet", "ganem_generator"):  # a broken version 2 of both
        (base / name / "2").mkdir()
        (base / name / "2" / "saved_model.pb").write_bytes(b"not a saved model")
    loads = []
    real = server_module.Servable

    def counting(*args, **kwargs):
        loads.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "Servable", counting)
    calls = {"n": 0}
    real_newest = server_module.newest_version

    def flaky(path):
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError(13, "Permission denied", str(path))
        return real_newest(path)

    monkeypatch.setattr(server_module, "newest_version", flaky)
    registry.start_polling()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(loads) < 2:
            time.sleep(0.05)
        polled = calls["n"]
        while time.monotonic() < deadline and calls["n"] < polled + 10:  # several more polls of both
            time.sleep(0.05)
        assert calls["n"] >= polled + 10
        assert sorted(loads) == [("ganem_enet", 2), ("ganem_generator", 2)]  # each broken version tried once
        assert registry.get("ganem_enet").version == 1
        export_servables(model, base)  # version 3: the poller is alive and takes it
        deadline = time.monotonic() + 20
        servables = ("ganem_enet", "ganem_generator")
        while time.monotonic() < deadline and {registry.get(n).version for n in servables} != {3}:
            time.sleep(0.05)
        assert registry.get("ganem_enet").version == 3 and registry.get("ganem_generator").version == 3
    finally:
        registry.stop()
    err = capsys.readouterr().err
    assert "Permission denied" in err and "Traceback" not in err


def test_start_up_errors_are_one_line(base, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = server_module.main(["--model_config_file", str(base / "models.config"), "--port", "0",
                                   "--rest_api_port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("serving.server: error:") and "REST" in err[-1]
    assert not [line for line in err if not line.startswith("serving")]  # log lines and one error, no traceback
