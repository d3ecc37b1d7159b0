"""A development and test model server, compatible with TensorFlow Serving.

    python -m serving.server --model_config_file BASE/models.config --port 8500 [--rest_api_port 8501]

For machines without the `tensorflow_model_server` binary. It reads the same
`models.config` and the same `<base>/<name>/<version>/` directories, and answers

* gRPC, with the official `tensorflow-serving-api` protos: PredictionService
  (Predict, Classify, GetModelMetadata) and ModelService.GetModelStatus;
* REST: `POST /v1/models/NAME[/versions/N]:predict` (row "instances" or columnar
  "inputs"), `GET /v1/models/NAME` (status) and `GET /v1/models/NAME/metadata`.

It serves the newest version of every model and polls the base paths (every
`--file_system_poll_wait_seconds`): a new version is loaded completely, then swapped in;
requests already running finish on the version they started with. Exports are written
to a staging directory and renamed, so a version directory is never half-written.

In production use `tensorflow_model_server` with the same directory and config:

    tensorflow_model_server --model_config_file=BASE/models.config --port=8500 --rest_api_port=8501
"""

import argparse
import json
import os
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402


class ServingError(Exception):
    """An error with a gRPC status code, mapped to HTTP for REST."""

    HTTP = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503, "INTERNAL": 500}

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
    except text_format.ParseError as err:
        raise ServingError("INVALID_ARGUMENT", f"{path} is not a model_config_list: {err}") from None
    models = [(m.name, m.base_path if os.path.isabs(m.base_path) else str(path.parent / m.base_path))
              for m in config.model_config_list.config]
    if not models:
        raise ServingError("INVALID_ARGUMENT", f"{path} names no models")
    return models


def newest_version(base_path):
    versions = [int(p.name) for p in Path(base_path).glob("*")
                if p.name.isdigit() and (p / "saved_model.pb").exists()]
    return max(versions, default=None)


class Servable:
    """One loaded version of one model: its signatures and their SignatureDefs."""

    def __init__(self, name, version, path):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, Path(path)
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = dict(self.loaded.signatures)
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = proto.meta_graphs[0].signature_def
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

    def run(self, signature_name, inputs):
        """Calls a signature on numpy inputs; bad inputs become INVALID_ARGUMENT naming what is expected."""
        import tensorflow as tf

        fn = self.signature(signature_name)
        specs = fn.structured_input_signature[1]
        missing = set(specs) - set(inputs)
        extra = set(inputs) - set(specs)
        if missing or extra:
            raise ServingError("INVALID_ARGUMENT", f"signature {signature_name or 'serving_default'} of {self.name} "
                               f"takes inputs {sorted(specs)}; missing {sorted(missing)}, unknown {sorted(extra)}")
        tensors = {}
        for key, spec in specs.items():
            value = np.asarray(inputs[key])
            if value.dtype != spec.dtype.as_numpy_dtype:
                raise ServingError("INVALID_ARGUMENT", f"input {key!r} must be {spec.dtype.name} with shape "
                                   f"{_shape_text(spec.shape)}; got {value.dtype} with shape {list(value.shape)}")
            tensors[key] = tf.constant(value)
        try:
            outputs = fn(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
            raise ServingError("INVALID_ARGUMENT", _first_line(err)) from None
        return {k: v.numpy() for k, v in outputs.items()}


def _shape_text(shape):
    return "[" + ", ".join("N" if d is None else str(d) for d in (shape.as_list() if shape.rank is not None else []))\
        + "]" if shape.rank is not None else "any"


def _first_line(err):
    text = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # TensorFlow's Assert messages carry the useful part on the first line with our text.
    for line in lines:
        if "must have shape" in line or "must lie in" in line or "must have the same" in line:
            return line
    return lines[0] if lines else type(err).__name__


class ModelRegistry:
    """The newest loaded version of every configured model, refreshed by polling."""

    def __init__(self, models, poll_seconds=1.0):
        self.models = dict(models)
        self.poll_seconds = poll_seconds
        self._current = {}  # name -> Servable; replaced whole, never mutated in place
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        missing = [name for name in self.models if name not in self._current]
        if missing:
            raise ServingError("NOT_FOUND", f"no loadable version of {', '.join(missing)} under "
                               f"{', '.join(self.models[m] for m in missing)}")

    def refresh(self):
        """Loads any version newer than the one served; returns the names that changed."""
        changed = []
        for name, base in self.models.items():
            version = newest_version(base)
            current = self._current.get(name)
            if version is None or (current is not None and current.version >= version):
                continue
            try:
                servable = Servable(name, version, Path(base) / str(version))
            except Exception as err:  # noqa: BLE001 - a bad new version must not stop the old one
                print(f"serving: could not load {name} version {version}: {_first_line(err)}", file=sys.stderr)
                continue
            with self._lock:
                self._current = {**self._current, name: servable}
            changed.append(name)
            print(f"serving: {name} version {version} is AVAILABLE", file=sys.stderr, flush=True)
        return changed

    def start_polling(self):
        def poll():
            while not self._stop.wait(self.poll_seconds):
                self.refresh()

        threading.Thread(target=poll, name="version-poller", daemon=True).start()

    def stop(self):
        self._stop.set()

    def get(self, name, version=None):
        servable = self._current.get(name)
        if servable is None:
            raise ServingError("NOT_FOUND", f"servable {name!r} not found; serving: "
                               f"{', '.join(sorted(self._current))}")
        if version and version != servable.version:
            raise ServingError("NOT_FOUND", f"{name} version {version} is not served (serving version "
                               f"{servable.version}, the newest)")
        return servable


# -- gRPC ------------------------------------------------------------------------------------
def _grpc_services(registry):
    import tensorflow as tf
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                         model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

    def guarded(method):
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except ServingError as err:
                context.abort(getattr(grpc.StatusCode, err.code), str(err))

        return wrapper

    def lookup(spec):
        version = spec.version.value if spec.HasField("version") else None
        return registry.get(spec.name, version)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guarded
        def Predict(self, request, context):
            servable = lookup(request.model_spec)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = servable.run(request.model_spec.signature_name, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name, response.model_spec.version.value = servable.name, servable.version
            response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
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
            examples = np.array([e.SerializeToString() for e in request.input.example_list.examples], dtype=object)
            outputs = servable.run(signature, {"inputs": examples})
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
def _rest_handler(registry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: one line per request is noise under load
            pass

        def _send(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self):
            """(model, version or None, verb or None) of /v1/models/NAME[/versions/N][:verb|/metadata]."""
            path = self.path.split("?", 1)[0]
            if not path.startswith("/v1/models/"):
                raise ServingError("NOT_FOUND", f"no such endpoint {path}; use /v1/models/NAME[:predict]")
            rest, _, verb = path[len("/v1/models/"):].partition(":")
            parts = rest.strip("/").split("/")
            name, version = parts[0], None
            if parts[1:3] and parts[1] == "versions":
                version = int(parts[2])
                parts = [name, *parts[3:]]
            if parts[1:] == ["metadata"]:
                verb = "metadata"
            return name, version, verb or None

        def do_GET(self):
            try:
                name, version, verb = self._route()
                servable = registry.get(name, version)
                if verb == "metadata":
                    from google.protobuf import json_format

                    signatures = {k: json_format.MessageToDict(v) for k, v in servable.signature_defs.items()}
                    self._send(200, {"model_spec": {"name": name, "version": str(servable.version)},
                                     "metadata": {"signature_def": {"signature_def": signatures}}})
                else:
                    self._send(200, {"model_version_status": [{"version": str(servable.version),
                                                               "state": "AVAILABLE",
                                                               "status": {"error_code": "OK", "error_message": ""}}]})
            except ServingError as err:
                self._send(err.http_status, {"error": str(err)})

        def do_POST(self):
            try:
                name, version, verb = self._route()
                if verb != "predict":
                    raise ServingError("NOT_FOUND", f"unsupported verb {verb!r}; this server answers :predict")
                servable = registry.get(name, version)
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError as err:
                    raise ServingError("INVALID_ARGUMENT", f"request body is not JSON: {err}") from None
                signature = body.get("signature_name") or "serving_default"
                specs = servable.signature(signature).structured_input_signature[1]
                if "instances" in body:
                    rows = body["instances"]
                    if rows and isinstance(rows[0], dict):
                        inputs = {k: [row[k] for row in rows] for k in rows[0]}
                    elif len(specs) == 1:
                        inputs = {next(iter(specs)): rows}
                    else:
                        raise ServingError("INVALID_ARGUMENT", f"signature {signature} has several inputs "
                                           f"({', '.join(sorted(specs))}): send instances as objects")
                    row_format = True
                elif "inputs" in body:
                    inputs = body["inputs"] if isinstance(body["inputs"], dict) else {next(iter(specs)): body["inputs"]}
                    row_format = False
                else:
                    raise ServingError("INVALID_ARGUMENT", "request needs 'instances' (row format) or 'inputs'")
                arrays = {}
                for key, value in inputs.items():
                    spec = specs.get(key)
                    if spec is None:
                        raise ServingError("INVALID_ARGUMENT", f"unknown input {key!r}; signature {signature} takes "
                                           f"{', '.join(sorted(specs))}")
                    arrays[key] = _json_array(value, spec, key)
                outputs = servable.run(signature, arrays)
                if row_format:
                    n = len(next(iter(outputs.values()))) if outputs else 0
                    rows = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]
                    self._send(200, {"predictions": rows})
                else:
                    self._send(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})
            except ServingError as err:
                self._send(err.http_status, {"error": str(err)})
            except Exception as err:  # noqa: BLE001 - the server must answer every request
                self._send(500, {"error": f"internal error: {_first_line(err)}"})

    return Handler


def _json_array(value, spec, key):
    """JSON numbers -> numpy of the signature's dtype; JSON carries no dtype, so ints and
    floats convert as TF Serving's REST API does, while strings for numbers are rejected."""
    dtype = spec.dtype.as_numpy_dtype
    try:
        array = np.asarray(value)
        if array.dtype.kind in "US" or array.dtype == object:
            raise ValueError
        if np.issubdtype(dtype, np.integer) and array.size and not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError
        return array.astype(dtype)
    except (ValueError, TypeError):
        raise ServingError("INVALID_ARGUMENT", f"input {key!r} must be {spec.dtype.name} numbers with shape "
                           f"{_shape_text(spec.shape)}") from None


# -- the server ------------------------------------------------------------------------------
class ModelServer:
    """gRPC (and optionally REST) on 127.0.0.1 or any host, over a ModelRegistry."""

    def __init__(self, model_config_file, port=8500, rest_api_port=0, host="0.0.0.0", poll_seconds=1.0,
                 workers=8):
        self.registry = ModelRegistry(read_model_config(model_config_file), poll_seconds)
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                       options=[("grpc.max_receive_message_length", 256 << 20),
                                                ("grpc.max_send_message_length", 256 << 20)])
        for add, service in _grpc_services(self.registry):
            add(service, self.grpc_server)
        self.port = self.grpc_server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise ServingError("UNAVAILABLE", f"cannot listen on {host}:{port}")
        self.http = None  # rest_api_port None: no REST; 0: any free port
        if rest_api_port is not None:
            self.http = ThreadingHTTPServer((host, rest_api_port), _rest_handler(self.registry))
            self.http.daemon_threads = True
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0],
                                     epilog="A development and test server: in production run tensorflow_model_server "
                                            "with the same --model_config_file.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_config_file", required=True, help="models.config written by the export")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0: any free port, -1: no REST)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="how often to look for new versions on disk")
    args = parser.parse_args(argv)
    try:
        server = ModelServer(args.model_config_file, args.port, None if args.rest_api_port < 0 else args.rest_api_port,
                             args.host, args.file_system_poll_wait_seconds).start()
    except ServingError as err:
        print(f"serving.server: error: {err}", file=sys.stderr)
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
