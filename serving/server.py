"""A development and test model server, compatible with TensorFlow Serving.

    python -m serving.server --model_config_file BASE/models.config --port 8500 [--rest_api_port 8501]

For machines without the `tensorflow_model_server` binary. It reads the same
`models.config` and the same `<base>/<name>/<version>/` directories, and answers

* gRPC, with the official `tensorflow-serving-api` protos: PredictionService
  (Predict, Classify, GetModelMetadata) and ModelService.GetModelStatus;
* REST: `POST /v1/models/NAME[/versions/N]:predict` (row "instances" or columnar
  "inputs"), `GET /v1/models/NAME` (status) and `GET /v1/models/NAME/metadata`.

It listens on 127.0.0.1 unless `--host` says otherwise, and has no authentication.
It serves the newest version of every model and polls the base paths (every
`--file_system_poll_wait_seconds`): a new version is loaded completely, then swapped in;
requests already running finish on the version they started with. A version of a zoo
E-net is only taken once its generator has it too (exports write both together).

Every request is checked against the declared signature (dtype, rank, inner dimensions,
a batch of at most `--max_batch_size`) before anything the size of the request is
allocated; bodies and messages are capped at `--max_request_bytes`; model calls in flight
are bounded (beyond them RESOURCE_EXHAUSTED / HTTP 429), REST bodies are capped lower
(`--max_rest_body_bytes`: JSON is parsed while other calls wait), REST connections are
bounded and time out, so status and metadata calls stay answered under load.

In production use `tensorflow_model_server` with the same directory and config:

    tensorflow_model_server --model_config_file=BASE/models.config --port=8500 --rest_api_port=8501
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from zoo.hub import VERSION_NAME, paired_version_dirs  # noqa: E402

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
# JSON is parsed holding Python's interpreter lock, about 0.2-0.5 s per MB of nested arrays on
# a small CPU, while every other call waits: REST bodies get a lower cap than gRPC messages.
DEFAULT_MAX_REST_BODY_BYTES = 16 << 20
REST_IDLE_SECONDS = 15.0  # a keep-alive connection with no next request is closed after this
REST_BODY_SECONDS = 30.0  # the whole body must arrive within this, however slowly it trickles
REST_MAX_CONNECTIONS = 64


def default_max_batch_size():
    """64 examples per 256 MiB of memory, between 64 and 4096: a batch of the zoo's networks
    needs a few MiB of activations per example, and a machine runs several at once."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 4 << 30
    return int(min(4096, max(64, memory // (256 << 20) * 64)))


class ServingError(Exception):
    """An error with a gRPC status code, mapped to HTTP for REST."""

    HTTP = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503,
            "INTERNAL": 500}

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code  # a grpc.StatusCode name, e.g. "INVALID_ARGUMENT"

    @property
    def http_status(self):
        return self.HTTP.get(self.code, 500)


def read_model_config(path):
    """[(name, base_path)] of a text-format model_config_list (TF Serving's models.config)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(path)
    if not path.exists():
        raise ServingError("NOT_FOUND", f"model config file {path} does not exist")
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except (text_format.ParseError, UnicodeDecodeError, OSError) as err:
        raise ServingError("INVALID_ARGUMENT", f"{path} is not a model_config_list: {_first_line(err)}") from None
    models = [(m.name, m.base_path if os.path.isabs(m.base_path) else str(path.parent / m.base_path))
              for m in config.model_config_list.config]
    if not models:
        raise ServingError("INVALID_ARGUMENT", f"{path} names no models")
    return models


def newest_version(base_path):
    """The newest complete version under `base_path` (for a zoo servable, one its sibling
    E-net or generator has too), or None."""
    return max(paired_version_dirs(base_path), default=None)


# -- checking requests against the declared signatures ---------------------------------------
def _shape_text(dims):
    """[N, 8, 8, 1] for declared dims [-1, 8, 8, 1]; "any" for an unknown rank."""
    if dims is None:
        return "any"
    return "[" + ", ".join("N" if i == 0 and d < 0 else "?" if d < 0 else str(d) for i, d in enumerate(dims)) + "]"


class InputSpec:
    """What a signature declares for one input: dtype and dims (-1: any; None: unknown rank)."""

    def __init__(self, key, tensor_info):
        import tensorflow as tf

        self.key = key
        self.dtype_enum = tensor_info.dtype
        self.dtype = tf.dtypes.as_dtype(tensor_info.dtype)
        shape = tensor_info.tensor_shape
        self.dims = None if shape.unknown_rank else [d.size for d in shape.dim]

    def describe(self):
        return f"{self.dtype.name} with shape {_shape_text(self.dims)}"

    def check_shape(self, dims, max_batch, max_bytes):
        """Refuses `dims` that do not fit the declaration, a batch over `max_batch`, or more
        elements than `max_bytes` could carry; before anything of that size is allocated."""
        dims = [int(d) for d in dims]
        if any(d < 0 for d in dims):
            raise ServingError("INVALID_ARGUMENT", f"input {self.key!r} has a negative dimension in {dims}")
        if self.dims is not None:
            fits = len(dims) == len(self.dims) and all(e < 0 or d == e for d, e in zip(dims, self.dims))
            if not fits:
                raise ServingError("INVALID_ARGUMENT", f"input {self.key!r} must have shape "
                                   f"{_shape_text(self.dims)}; got {dims}")
        if dims and (self.dims is None or self.dims[0] < 0) and dims[0] > max_batch:
            raise ServingError("INVALID_ARGUMENT", f"input {self.key!r} has a batch of {dims[0]}; this server "
                               f"takes at most {max_batch} (--max_batch_size)")
        elements = 1
        for d in dims:
            elements *= d
        if elements * max(self.dtype.size, 1) > max_bytes:
            raise ServingError("INVALID_ARGUMENT", f"input {self.key!r} of shape {dims} is larger than "
                               f"{max_bytes} bytes (--max_request_bytes)")
        return elements


# TensorProto value fields by dtype, for counting what a request really carries.
_VALUE_FIELDS = {"float32": "float_val", "float64": "double_val", "int32": "int_val", "int16": "int_val",
                 "int8": "int_val", "uint8": "int_val", "int64": "int64_val", "bool": "bool_val",
                 "string": "string_val", "float16": "half_val", "bfloat16": "half_val", "uint32": "uint32_val",
                 "uint64": "uint64_val", "uint16": "int_val"}


def tensor_from_proto(proto, spec, max_batch, max_bytes):
    """A TensorProto as numpy, once its dtype, shape, size and content agree with `spec`:
    `tf.make_ndarray` pads a single value out to the declared shape, so an unchecked
    70-byte request could make it allocate gigabytes."""
    import tensorflow as tf

    if proto.dtype != spec.dtype_enum:
        try:
            got = tf.dtypes.as_dtype(proto.dtype).name
        except TypeError:
            got = f"dtype enum {proto.dtype}"
        raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r} must be {spec.describe()}; got {got}")
    if proto.tensor_shape.unknown_rank:
        raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r} must have a known shape "
                           f"{_shape_text(spec.dims)}")
    elements = spec.check_shape([d.size for d in proto.tensor_shape.dim], max_batch, max_bytes)
    if proto.tensor_content:
        if spec.dtype == tf.string or len(proto.tensor_content) != elements * spec.dtype.size:
            raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r}: tensor_content holds "
                               f"{len(proto.tensor_content)} bytes, not the {elements} x {spec.dtype.size} "
                               f"of its shape")
    else:
        field = _VALUE_FIELDS.get(spec.dtype.name)
        if field is None:
            raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r}: dtype {spec.dtype.name} is not served")
        count = len(getattr(proto, field))
        if count > elements:
            raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r} carries {count} values for a shape "
                               f"of {elements} elements")
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as err:
        raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r} cannot be read: {_first_line(err)}") from None


class Servable:
    """One loaded version of one model: its signatures and their SignatureDefs."""

    def __init__(self, name, version, path, max_batch=None, max_bytes=DEFAULT_MAX_REQUEST_BYTES):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, Path(path)
        self.max_batch = max_batch or default_max_batch_size()
        self.max_bytes = max_bytes
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = dict(self.loaded.signatures)
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = proto.meta_graphs[0].signature_def
        self.input_specs = {name: {key: InputSpec(key, info) for key, info in self.signature_defs[name].inputs.items()}
                            for name in self.signatures if name in self.signature_defs}
        self._warm_up()

    def _warm_up(self):
        """Runs the warm-up records, as TF Serving does before a version becomes AVAILABLE."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        records = self.path / "assets.extra" / "tf_serving_warmup_requests"
        if not records.exists():
            return
        for raw in tf.data.TFRecordDataset(str(records)).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog.FromString(raw)
            if log.HasField("predict_log"):
                request = log.predict_log.request
                self.run(request.model_spec.signature_name or "serving_default",
                         {k: tf.make_ndarray(v) for k, v in request.inputs.items()})

    def signature(self, name):
        name = name or "serving_default"
        if name not in self.signatures:
            raise ServingError("INVALID_ARGUMENT", f"model {self.name} has no signature {name!r}; it has: "
                               f"{', '.join(sorted(self.signatures))}")
        return self.signatures[name]

    def specs(self, signature_name, keys=None):
        """The InputSpecs of a signature, once `keys` (if given) are exactly its inputs."""
        name = signature_name or "serving_default"
        self.signature(name)
        specs = self.input_specs.get(name, {})
        if keys is None:
            return specs
        missing, extra = set(specs) - set(keys), set(keys) - set(specs)
        if missing or extra:
            raise ServingError("INVALID_ARGUMENT", f"signature {name} of {self.name} takes inputs {sorted(specs)}; "
                               f"missing {sorted(missing)}, unknown {sorted(extra)}")
        return specs

    def protos_to_arrays(self, signature_name, protos):
        specs = self.specs(signature_name, protos)
        return {key: tensor_from_proto(proto, specs[key], self.max_batch, self.max_bytes)
                for key, proto in protos.items()}

    def run(self, signature_name, inputs):
        """Calls a signature on numpy inputs; bad inputs become INVALID_ARGUMENT naming what is expected."""
        import tensorflow as tf

        fn = self.signature(signature_name)
        specs = self.specs(signature_name, inputs)
        tensors = {}
        for key, spec in specs.items():
            value = np.asarray(inputs[key])
            if spec.dtype == tf.string:
                ok = value.dtype == object or value.dtype.kind in "SU"
            else:
                ok = value.dtype == spec.dtype.as_numpy_dtype
            if not ok:
                raise ServingError("INVALID_ARGUMENT", f"input {key!r} must be {spec.describe()}; got {value.dtype} "
                                   f"with shape {list(value.shape)}")
            spec.check_shape(value.shape, self.max_batch, self.max_bytes)
            tensors[key] = tf.constant(value)
        try:
            outputs = fn(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
            raise ServingError("INVALID_ARGUMENT", _first_line(err)) from None
        return {k: v.numpy() for k, v in outputs.items()}


def _first_line(err):
    text = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # TensorFlow's Assert messages carry the useful part on the first line with our text.
    for line in lines:
        if "must have shape" in line or "must lie in" in line or "must have the same" in line:
            return line
    return (lines[0] if lines else type(err).__name__)[:500]


class ModelRegistry:
    """The newest loaded version of every configured model, refreshed by polling."""

    def __init__(self, models, poll_seconds=1.0, max_batch=None, max_bytes=DEFAULT_MAX_REQUEST_BYTES):
        self.models = dict(models)
        self.poll_seconds = poll_seconds
        self.max_batch, self.max_bytes = max_batch or default_max_batch_size(), max_bytes
        self._current = {}  # name -> Servable; replaced whole, never mutated in place
        self._failed = {}  # name -> (version, file identity) that failed to load: not retried as it is
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        missing = [name for name in self.models if name not in self._current]
        if missing:
            raise ServingError("NOT_FOUND", f"no loadable version of {', '.join(missing)} under "
                               f"{', '.join(self.models[m] for m in missing)}")

    def refresh(self):
        """Loads any version newer than the one served; returns the names that changed. No
        error of one model (unreadable directory, broken version) stops the others."""
        changed = []
        for name, base in self.models.items():
            try:
                version = newest_version(base)
                current = self._current.get(name)
                if version is None or (current is not None and current.version >= version):
                    continue
                stat = (Path(base) / str(version) / "saved_model.pb").stat()
                attempt = (version, stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if self._failed.get(name) == attempt:
                    continue
                try:
                    servable = Servable(name, version, Path(base) / str(version), self.max_batch, self.max_bytes)
                except Exception as err:  # noqa: BLE001 - a bad new version must not stop the old one
                    self._failed[name] = attempt
                    print(f"serving: could not load {name} version {version} (not retried until it changes "
                          f"or a newer one appears): {_first_line(err)}", file=sys.stderr, flush=True)
                    continue
            except OSError as err:
                print(f"serving: cannot look for versions of {name} under {base}: {_first_line(err)}",
                      file=sys.stderr, flush=True)
                continue
            with self._lock:
                self._current = {**self._current, name: servable}
            changed.append(name)
            print(f"serving: {name} version {version} is AVAILABLE", file=sys.stderr, flush=True)
        return changed

    def start_polling(self):
        def poll():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.refresh()
                except Exception as err:  # noqa: BLE001 - the poller must outlive any one bad poll
                    print(f"serving: version poll failed: {_first_line(err)}", file=sys.stderr, flush=True)

        threading.Thread(target=poll, name="version-poller", daemon=True).start()

    def stop(self):
        self._stop.set()

    def get(self, name, version=None):
        servable = self._current.get(name)
        if servable is None:
            raise ServingError("NOT_FOUND", f"servable {name!r} not found; serving: "
                               f"{', '.join(sorted(self._current))}")
        if version is not None and version != servable.version:
            raise ServingError("NOT_FOUND", f"{name} version {version} is not served (serving version "
                               f"{servable.version}, the newest)")
        return servable


class Admission:
    """Bounds the model calls in flight: a call beyond the bound is refused at once
    (RESOURCE_EXHAUSTED) rather than queued on a thread that status calls need."""

    def __init__(self, limit):
        self.limit = max(1, int(limit))
        self._slots = threading.BoundedSemaphore(self.limit)

    def __enter__(self):
        if not self._slots.acquire(blocking=False):
            raise ServingError("RESOURCE_EXHAUSTED", f"{self.limit} model calls are already running; retry later")
        return self

    def __exit__(self, *exc):
        self._slots.release()


# -- gRPC ------------------------------------------------------------------------------------
def _grpc_services(registry, admission):
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def guarded(method):
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except ServingError as err:
                code, message = getattr(grpc.StatusCode, err.code), str(err)
            except Exception as err:  # noqa: BLE001 - clients get a status, not a Python traceback
                print(f"serving: internal error in {method.__name__}: {type(err).__name__}: {_first_line(err)}",
                      file=sys.stderr, flush=True)
                code, message = grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}"
            context.abort(code, message)

        wrapper.__name__ = method.__name__
        return wrapper

    def lookup(spec):
        if spec.version_label:
            raise ServingError("INVALID_ARGUMENT", "version labels are not supported; name a version number")
        version = spec.version.value if spec.HasField("version") else None
        return registry.get(spec.name, version)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guarded
        def Predict(self, request, context):
            servable = lookup(request.model_spec)
            signature = request.model_spec.signature_name or "serving_default"
            inputs = servable.protos_to_arrays(signature, dict(request.inputs))
            with admission:
                outputs = servable.run(signature, inputs)
            unknown = set(request.output_filter) - set(outputs)
            if unknown:
                raise ServingError("INVALID_ARGUMENT", f"output_filter names unknown outputs {sorted(unknown)}; "
                                   f"signature {signature} has {sorted(outputs)}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name, response.model_spec.version.value = servable.name, servable.version
            response.model_spec.signature_name = signature
            for key, value in outputs.items():
                if not request.output_filter or key in request.output_filter:
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

        @guarded
        def Classify(self, request, context):
            servable = lookup(request.model_spec)
            signature = request.model_spec.signature_name or "classify"
            if not request.input.HasField("example_list"):
                raise ServingError("INVALID_ARGUMENT", "Classify takes input.example_list (tf.Example protos)")
            count = len(request.input.example_list.examples)
            if count > servable.max_batch:
                raise ServingError("INVALID_ARGUMENT", f"{count} examples; this server takes at most "
                                   f"{servable.max_batch} (--max_batch_size)")
            examples = np.array([e.SerializeToString() for e in request.input.example_list.examples], dtype=object)
            with admission:
                outputs = servable.run(signature, {"inputs": examples})
            if not {"classes", "scores"} <= set(outputs):
                raise ServingError("INVALID_ARGUMENT", f"signature {signature} is not a classification signature")
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name, response.model_spec.version.value = servable.name, servable.version
            response.model_spec.signature_name = signature
            for labels, scores in zip(outputs["classes"], outputs["scores"]):
                row = response.result.classifications.add()
                for label, score in zip(labels, scores):
                    row.classes.add(label=label.decode() if isinstance(label, bytes) else str(label),
                                    score=float(score))
            return response

        @guarded
        def GetModelMetadata(self, request, context):
            servable = lookup(request.model_spec)
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError("INVALID_ARGUMENT", "metadata_field must be ['signature_def']")
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(value)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name, response.model_spec.version.value = servable.name, servable.version
            response.metadata["signature_def"].Pack(signature_map)
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guarded
        def GetModelStatus(self, request, context):
            servable = lookup(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            status = response.model_version_status.add()
            status.version = servable.version
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return response

    return [(prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server, PredictionService()),
            (model_service_pb2_grpc.add_ModelServiceServicer_to_server, ModelService())]


# -- REST ------------------------------------------------------------------------------------
class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, up to `max_connections`; past that a connection gets a 503
    and is closed at once, so idle or slow clients cannot pile up threads."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, handler, max_connections=REST_MAX_CONNECTIONS):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "too many open connections; retry later"}'
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                                + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def handle_error(self, request, client_address):
        """One line, not socketserver's traceback: a client that resets its connection is routine."""
        err = sys.exc_info()[1]
        if not isinstance(err, (ConnectionError, TimeoutError)):
            print(f"serving: REST connection from {client_address[0]} failed: {type(err).__name__}: "
                  f"{_first_line(err)}", file=sys.stderr, flush=True)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _rest_handler(registry, admission, max_bytes, max_body_bytes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = REST_IDLE_SECONDS  # socket timeout: idle keep-alive and stalled reads end

        def log_message(self, *args):  # quiet: one line per request is noise under load
            pass

        def _send(self, status, payload, close=False):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if close:
                # The rest of the request was not read: the connection cannot carry another one.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
            if close:
                self._linger()

        def _linger(self):
            """Closing with unread input makes the kernel reset the connection, and the client may
            lose the answer with it: stop writing, then drain briefly (bounded in bytes and time)."""
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(0.5)
                deadline, drained = time.monotonic() + 2.0, 0
                while time.monotonic() < deadline and drained < (64 << 20):
                    chunk = self.connection.recv(1 << 20)
                    if not chunk:
                        break
                    drained += len(chunk)
            except OSError:
                pass

        def _route(self):
            """(model, version or None, verb or None) of /v1/models/NAME[/versions/N][:verb|/metadata]."""
            path = self.path.split("?", 1)[0]
            if not path.startswith("/v1/models/"):
                raise ServingError("NOT_FOUND", f"no such endpoint {path[:200]}; use /v1/models/NAME[:predict]")
            rest, _, verb = path[len("/v1/models/"):].partition(":")
            parts = rest.strip("/").split("/")
            name, version = parts[0], None
            if parts[1:2] == ["versions"]:
                if len(parts) < 3 or not VERSION_NAME.fullmatch(parts[2]):
                    raise ServingError("INVALID_ARGUMENT", f"the version in {path[:200]} must be a number")
                version = int(parts[2])
                parts = [name, *parts[3:]]
            if parts[1:] == ["metadata"]:
                verb = "metadata"
            elif parts[1:]:
                raise ServingError("NOT_FOUND", f"no such endpoint {path[:200]}")
            return name, version, verb or None

        def _read_body(self):
            """The request body, or a ServingError once it is refused (the connection is then closed)."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise ServingError("INVALID_ARGUMENT", "chunked bodies are not accepted: send Content-Length")
            length = self.headers.get("Content-Length")
            if length is None:
                raise ServingError("INVALID_ARGUMENT", "a POST needs Content-Length")
            if not length.strip().isdigit():
                raise ServingError("INVALID_ARGUMENT", f"Content-Length {length[:40]!r} is not a byte count")
            length = int(length)
            if length > max_body_bytes:
                raise ServingError("INVALID_ARGUMENT", f"the body of {length} bytes is larger than {max_body_bytes} "
                                   f"(--max_rest_body_bytes; gRPC takes up to --max_request_bytes)")
            deadline, chunks, received = time.monotonic() + REST_BODY_SECONDS, [], 0
            while received < length:
                if time.monotonic() > deadline:
                    raise ServingError("INVALID_ARGUMENT", f"the body did not arrive within {REST_BODY_SECONDS:.0f} s")
                chunk = self.rfile.read1(min(length - received, 1 << 20))
                if not chunk:
                    raise ServingError("INVALID_ARGUMENT", f"the body ended after {received} of {length} bytes")
                chunks.append(chunk)
                received += len(chunk)
            return b"".join(chunks)

        def do_GET(self):
            # A GET with a body would leave it in the connection as the "next request".
            close = self.headers.get("Content-Length", "0").strip() not in ("", "0") \
                or "Transfer-Encoding" in self.headers
            if close:
                self.close_connection = True
            try:
                name, version, verb = self._route()
                servable = registry.get(name, version)
                if verb == "metadata":
                    from google.protobuf import json_format

                    signatures = {k: json_format.MessageToDict(v) for k, v in servable.signature_defs.items()}
                    self._send(200, {"model_spec": {"name": name, "version": str(servable.version)},
                                     "metadata": {"signature_def": {"signature_def": signatures}}})
                elif verb is None:
                    self._send(200, {"model_version_status": [{"version": str(servable.version),
                                                               "state": "AVAILABLE",
                                                               "status": {"error_code": "OK", "error_message": ""}}]})
                else:
                    raise ServingError("NOT_FOUND", f"GET does not answer :{verb[:40]}")
            except ServingError as err:
                self._send(err.http_status, {"error": str(err)})
            except Exception as err:  # noqa: BLE001 - the server must answer every request
                print(f"serving: internal error in GET: {type(err).__name__}: {_first_line(err)}", file=sys.stderr)
                self._send(500, {"error": "internal error"})

        def do_POST(self):
            try:
                body = self._read_body()
            except ServingError as err:
                self._send(err.http_status, {"error": str(err)}, close=True)
                return
            except (OSError, ValueError) as err:  # the socket timed out or broke mid-body
                self.close_connection = True
                try:
                    self._send(400, {"error": f"the body could not be read: {_first_line(err)}"}, close=True)
                except OSError:
                    pass
                return
            try:
                self._predict(body)
            except ServingError as err:
                self._send(err.http_status, {"error": str(err)})
            except Exception as err:  # noqa: BLE001 - the server must answer every request
                print(f"serving: internal error in POST: {type(err).__name__}: {_first_line(err)}", file=sys.stderr)
                self._send(500, {"error": "internal error"})

        def _predict(self, raw):
            name, version, verb = self._route()
            if verb != "predict":
                raise ServingError("NOT_FOUND", f"unsupported verb {verb!r}; this server answers :predict")
            servable = registry.get(name, version)
            try:
                body = json.loads(raw or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ServingError("INVALID_ARGUMENT", f"request body is not JSON: {err}") from None
            except RecursionError:
                raise ServingError("INVALID_ARGUMENT", "request body is nested too deeply") from None
            if not isinstance(body, dict):
                raise ServingError("INVALID_ARGUMENT", f"request body must be a JSON object, not "
                                   f"{type(body).__name__}")
            signature = body.get("signature_name") or "serving_default"
            if not isinstance(signature, str):
                raise ServingError("INVALID_ARGUMENT", "signature_name must be a string")
            specs = servable.specs(signature)
            if "instances" in body:
                rows = body["instances"]
                if not isinstance(rows, list):
                    raise ServingError("INVALID_ARGUMENT", "instances must be a list of rows")
                if rows and isinstance(rows[0], dict):
                    keys = set(rows[0])
                    if not all(isinstance(row, dict) and set(row) == keys for row in rows):
                        raise ServingError("INVALID_ARGUMENT", "every row of instances must be an object with "
                                           f"the same keys ({', '.join(sorted(map(str, keys)))})")
                    inputs = {k: [row[k] for row in rows] for k in keys}
                elif len(specs) == 1:
                    inputs = {next(iter(specs)): rows}
                else:
                    raise ServingError("INVALID_ARGUMENT", f"signature {signature} has several inputs "
                                       f"({', '.join(sorted(specs))}): send instances as objects")
                row_format = True
            elif "inputs" in body:
                if isinstance(body["inputs"], dict):
                    inputs = body["inputs"]
                elif len(specs) == 1:
                    inputs = {next(iter(specs)): body["inputs"]}
                else:
                    raise ServingError("INVALID_ARGUMENT", f"signature {signature} has several inputs "
                                       f"({', '.join(sorted(specs))}): send inputs as an object")
                row_format = False
            else:
                raise ServingError("INVALID_ARGUMENT", "request needs 'instances' (row format) or 'inputs'")
            servable.specs(signature, inputs)  # names every missing and unknown input
            arrays = {key: _json_array(value, specs[key]) for key, value in inputs.items()}
            with admission:
                outputs = servable.run(signature, arrays)
            if row_format:
                n = len(next(iter(outputs.values()))) if outputs else 0
                rows = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]
                self._send(200, {"predictions": rows})
            else:
                self._send(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})

    return Handler


def _json_array(value, spec):
    """JSON numbers -> numpy of the signature's dtype; JSON carries no dtype, so ints and
    floats convert as TF Serving's REST API does, while strings for numbers, ragged rows
    and anything nested past the declared rank are rejected."""
    dtype = spec.dtype.as_numpy_dtype
    try:
        array = np.asarray(value)
        if array.dtype.kind in "USO" or array.dtype == object:
            raise ValueError
        if np.issubdtype(dtype, np.integer) and array.size and not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError
        return array.astype(dtype)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ServingError("INVALID_ARGUMENT", f"input {spec.key!r} must be {spec.dtype.name} numbers with shape "
                           f"{_shape_text(spec.dims)} (same-length rows)") from None


# -- the server ------------------------------------------------------------------------------
class ModelServer:
    """gRPC (and optionally REST) on 127.0.0.1 (or `host`), over a ModelRegistry."""

    def __init__(self, model_config_file, port=8500, rest_api_port=0, host="127.0.0.1", poll_seconds=1.0,
                 workers=8, max_batch_size=None, max_request_bytes=DEFAULT_MAX_REQUEST_BYTES,
                 max_rest_body_bytes=DEFAULT_MAX_REST_BODY_BYTES, rest_max_connections=REST_MAX_CONNECTIONS):
        self.max_batch_size = max_batch_size or default_max_batch_size()
        self.registry = ModelRegistry(read_model_config(model_config_file), poll_seconds, self.max_batch_size,
                                      max_request_bytes)
        # Model calls take at most `workers` threads; the spare ones keep status and metadata
        # answered while every model call is busy.
        self.admission = Admission(workers)
        spare = 4
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers + spare),
            maximum_concurrent_rpcs=4 * (workers + spare),
            options=[("grpc.max_receive_message_length", max_request_bytes),
                     ("grpc.max_send_message_length", 256 << 20),
                     ("grpc.max_concurrent_streams", 64),
                     ("grpc.max_connection_idle_ms", 120_000)])
        for add, service in _grpc_services(self.registry, self.admission):
            add(service, self.grpc_server)
        try:
            self.port = self.grpc_server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise ServingError("UNAVAILABLE", f"cannot listen on {host}:{port} (gRPC)")
        self.http = None  # rest_api_port None: no REST; 0: any free port
        if rest_api_port is not None:
            try:
                self.http = BoundedHTTPServer((host, rest_api_port),
                                              _rest_handler(self.registry, self.admission, max_request_bytes,
                                                            min(max_rest_body_bytes, max_request_bytes)),
                                              rest_max_connections)
            except OSError as err:
                raise ServingError("UNAVAILABLE", f"cannot listen on {host}:{rest_api_port} (REST): "
                                   f"{err.strerror or err}") from None
        self.rest_port = self.http.server_address[1] if self.http else None

    def start(self):
        self.grpc_server.start()
        if self.http:
            threading.Thread(target=self.http.serve_forever, name="rest", daemon=True).start()
        self.registry.start_polling()
        return self

    def stop(self):
        self.registry.stop()
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        self.grpc_server.stop(grace=2).wait()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0],
                                     epilog="A development and test server: in production run tensorflow_model_server "
                                            "with the same --model_config_file.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_config_file", required=True, help="models.config written by the export")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0: any free port, -1: no REST)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; there is no authentication, so open it (0.0.0.0) with care")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="how often to look for new versions on disk")
    parser.add_argument("--max_batch_size", type=int, default=default_max_batch_size(),
                        help="largest batch (leading dimension) of any input, every signature; default sized "
                             "to this machine's memory")
    parser.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="largest gRPC message, and largest input tensor")
    parser.add_argument("--max_rest_body_bytes", type=int, default=DEFAULT_MAX_REST_BODY_BYTES,
                        help="largest REST body (JSON is parsed while other calls wait: keep it small)")
    args = parser.parse_args(argv)
    for flag in ("max_batch_size", "max_request_bytes", "max_rest_body_bytes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.file_system_poll_wait_seconds <= 0:
        parser.error("--file_system_poll_wait_seconds must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        server = ModelServer(args.model_config_file, args.port, None if args.rest_api_port < 0 else args.rest_api_port,
                             args.host, args.file_system_poll_wait_seconds, max_batch_size=args.max_batch_size,
                             max_request_bytes=args.max_request_bytes,
                             max_rest_body_bytes=args.max_rest_body_bytes).start()
    except ServingError as err:
        print(f"serving.server: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a start-up failure is one line, not a traceback
        print(f"serving.server: error: {type(err).__name__}: {_first_line(err)}", file=sys.stderr)
        return 2
    print(f"serving {', '.join(sorted(server.registry.models))}: gRPC on {args.host}:{server.port}"
          + (f", REST on {args.host}:{server.rest_port}" if server.rest_port else ""), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
