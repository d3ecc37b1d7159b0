#!/usr/bin/env python
"""Serving under abuse: a bounded adversarial run against `serving.server` on 127.0.0.1.

Exports a GAN-EM (28x28 E-net and generator), starts `python -m serving.server` in its own
process with its default limits, and while a well-formed client keeps calling it (gRPC
classify and REST predict, answers checked against the model in this process) and a
status client keeps asking GetModelStatus, it sends:

* gRPC: huge declared shapes with one value (the 70-byte request that asked make_ndarray
  for 16 GiB), wrong dtypes and shapes, short or long tensor contents, unknown inputs,
  models, signatures and versions, a message over the size cap, and a flood of
  concurrent batch-64 calls;
* REST: bodies over the cap, negative and malformed Content-Length, chunked bodies, bodies
  that are lists, malformed or deeply nested JSON, ragged rows, bad version paths, a
  request smuggled in the body of a refused one;
* slow and idle connections: idle REST sockets beyond the connection cap, bodies trickled
  byte by byte, idle gRPC channels;
* a new version exported in the middle of it all.

Reports the requests tried and what they got, the server's peak RSS and threads (from
/proc), the well-formed answers (correct / wrong / failed), status latencies, and whether
the server still answers at the end. Every phase is bounded in count and time.

    python benchmarks/serving_abuse.py [--out benchmarks/results/serving_abuse.json]
"""
import argparse
import collections
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from serving.client import ServingClientError, ZooClient  # noqa: E402
from trainers.local_cluster import free_ports  # noqa: E402

HOST = "127.0.0.1"


class Tally:
    """Outcomes per abuse category; `unexpected` counts answers a hardened server never gives
    (INTERNAL, UNKNOWN, HTTP 500, or no answer where one was due)."""

    def __init__(self):
        self.outcomes = collections.defaultdict(collections.Counter)
        self.unexpected = []
        self.lock = threading.Lock()

    def add(self, category, outcome, expected=None):
        with self.lock:
            self.outcomes[category][str(outcome)] += 1
            if outcome in ("INTERNAL", "UNKNOWN", 500, "no answer") or (expected and outcome not in expected):
                self.unexpected.append(f"{category}: {outcome}")

    def tried(self):
        return sum(sum(c.values()) for c in self.outcomes.values())


class ProcWatch(threading.Thread):
    """Samples a process's RSS and thread count from /proc every `interval` seconds."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop = pid, interval, threading.Event()
        self.max_rss_kib = self.max_threads = 0

    def status(self):
        fields = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        except OSError:
            return {}
        return fields

    def run(self):
        while not self.stop.wait(self.interval):
            fields = self.status()
            if fields:
                self.max_rss_kib = max(self.max_rss_kib, int(fields["VmRSS"].split()[0]))
                self.max_threads = max(self.max_threads, int(fields["Threads"]))


# -- raw protocols ---------------------------------------------------------------------------
def http_exchange(port, raw, timeout=120.0, read=True):
    """Sends `raw` bytes, returns the status code of the answer (or "closed")."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            return "closed"
        if not read:
            return None
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed"
                data += chunk
        except (TimeoutError, ConnectionResetError):
            return "closed"
        return int(data.split(b" ", 2)[1])


def post(path, body, headers=None):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = {"Host": "x", "Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    head = {k: v for k, v in head.items() if v is not None}
    return (f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode() + body


def grpc_abuse(port, tally, shape, latent_dim, rounds):
    import grpc
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    def proto(dtype, dims, **values):
        return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]), **values)

    h, w, c = shape
    cases = {
        "huge_declared_cluster_shape": ("ganem_generator", "sample", {
            "cluster": proto(types_pb2.DT_INT64, [1 << 31], int64_val=[0]),
            "seed": proto(types_pb2.DT_INT64, [], int64_val=[1])}),
        "huge_declared_image_batch": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_FLOAT, [1 << 40, h, w, c], float_val=[0.5])}),
        "huge_declared_inner_dim": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_FLOAT, [1, 1 << 31, w, c], float_val=[0.5])}),
        "int64_overflowing_shape": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_FLOAT, [1 << 62, 1 << 62, w, c], float_val=[0.5])}),
        "wrong_dtype": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_DOUBLE, [1, h, w, c], double_val=[0.5])}),
        "wrong_rank": ("ganem_enet", "serving_default", {"images": proto(types_pb2.DT_FLOAT, [h * w * c])}),
        "short_tensor_content": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_FLOAT, [2, h, w, c], tensor_content=b"\0" * 12)}),
        "too_many_values": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_FLOAT, [1, h, w, c], float_val=[0.0] * (h * w * c + 1))}),
        "unknown_input": ("ganem_enet", "serving_default", {
            "images": proto(types_pb2.DT_FLOAT, [1, h, w, c]), "extra": proto(types_pb2.DT_FLOAT, [1])}),
        "wrong_noise_width": ("ganem_generator", "serving_default", {
            "noise": proto(types_pb2.DT_FLOAT, [2, latent_dim + 3]),
            "cluster": proto(types_pb2.DT_INT64, [2])}),
        "cluster_out_of_range": ("ganem_generator", "sample", {
            "cluster": proto(types_pb2.DT_INT64, [2], int64_val=[0, 1 << 40]),
            "seed": proto(types_pb2.DT_INT64, [], int64_val=[1])}),
        "unknown_model": ("nope", "serving_default", {}),
        "unknown_signature": ("ganem_enet", "nope", {}),
    }
    refusals = {"INVALID_ARGUMENT", "NOT_FOUND"}
    with grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.max_send_message_length", 256 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(rounds):
            for category, (name, signature, inputs) in cases.items():
                request = predict_pb2.PredictRequest()
                request.model_spec.name, request.model_spec.signature_name = name, signature
                for key, value in inputs.items():
                    request.inputs[key].CopyFrom(value)
                try:
                    stub.Predict(request, timeout=30)
                    tally.add(f"grpc_{category}", "OK", refusals)
                except grpc.RpcError as err:
                    tally.add(f"grpc_{category}", err.code().name, refusals)
            request = predict_pb2.PredictRequest()  # version 0 is a version, not "the newest"
            request.model_spec.name = "ganem_enet"
            request.model_spec.version.value = 0
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, *shape), np.float32)))
            try:
                stub.Predict(request, timeout=30)
                tally.add("grpc_version_zero", "OK", refusals)
            except grpc.RpcError as err:
                tally.add("grpc_version_zero", err.code().name, refusals)
        # Over the message cap: refused by gRPC itself before our code sees it.
        big = predict_pb2.PredictRequest()
        big.model_spec.name = "ganem_enet"
        big.inputs["images"].CopyFrom(proto(types_pb2.DT_FLOAT, [1, h, w, c], tensor_content=b"\0" * (80 << 20)))
        for _ in range(3):
            try:
                stub.Predict(big, timeout=60)
                tally.add("grpc_oversized_message", "OK", {"RESOURCE_EXHAUSTED"})
            except grpc.RpcError as err:
                tally.add("grpc_oversized_message", err.code().name, {"RESOURCE_EXHAUSTED"})


def grpc_flood(port, tally, shape, threads=24, per_thread=6):
    """Concurrent valid batch-64 calls, more than the server runs at once: each is answered
    or refused with RESOURCE_EXHAUSTED, never left hanging."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ganem_enet"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(
        np.random.default_rng(1).uniform(size=(64, *shape)).astype(np.float32)))

    def worker():
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(per_thread):
                try:
                    stub.Predict(request, timeout=60)
                    tally.add("grpc_flood_batch64", "OK")
                except grpc.RpcError as err:
                    tally.add("grpc_flood_batch64", err.code().name, {"RESOURCE_EXHAUSTED"})

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def rest_abuse(port, tally, shape, rounds):
    h, w, c = shape
    good_row = np.zeros(shape).tolist()
    path = "/v1/models/ganem_enet:predict"
    smuggled = b"GET /v1/models/ganem_enet HTTP/1.1\r\nHost: x\r\n\r\n"
    cases = {
        "body_over_cap_declared": (post(path, b"", {"Content-Length": str(1 << 40)}), {400}),
        "negative_content_length": (post(path, b"{}", {"Content-Length": "-1"}), {400}),
        "malformed_content_length": (post(path, b"{}", {"Content-Length": "12abc"}), {400}),
        "chunked_body": (post(path, b"5\r\nhello\r\n0\r\n\r\n", {"Content-Length": None,
                                                                "Transfer-Encoding": "chunked"}), {400}),
        "list_body": (post(path, [1, 2, 3]), {400}),
        "malformed_json": (post(path, b"{\"instances\": [1, 2"), {400}),
        "deep_json": (post(path, b"[" * 200_000 + b"]" * 200_000), {400}),
        "deep_json_in_object": (post(path, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), {400}),
        "ragged_rows": (post(path, {"instances": [good_row, good_row[:-1]]}), {400}),
        "mixed_row_objects": (post(path, {"instances": [{"images": good_row}, {"other": 1}]}), {400}),
        "strings_for_numbers": (post(path, {"instances": [[["a"] * w] * h]}), {400}),
        "wrong_shape": (post(path, {"instances": [np.zeros((h, w + 1, c)).tolist()]}), {400}),
        "version_not_a_number": (post("/v1/models/ganem_enet/versions/abc:predict", {"instances": []}), {400}),
        "version_superscript": (post("/v1/models/ganem_enet/versions/%C2%B2:predict", {"instances": []}), {400}),
        "get_version_not_a_number": (b"GET /v1/models/ganem_enet/versions/abc HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
        "unknown_model_smuggling_a_request": (post("/v1/models/nope:predict", smuggled), {404}),
        "unknown_verb": (post("/v1/models/ganem_enet:explode", {}), {404}),
        "huge_batch_of_zeros": (post(path, {"inputs": {"images": np.zeros((5000, h, w, c), np.uint8).tolist()}}),
                                {400}),
    }
    for _ in range(rounds):
        for category, (raw, expected) in cases.items():
            tally.add(f"rest_{category}", http_exchange(port, raw), expected)
    # A refused request's body must not be answered as a second request on the connection.
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(post("/v1/models/nope:predict", smuggled) + smuggled)
        sock.settimeout(3)
        data = b""
        try:
            while data.count(b"HTTP/1.1 ") < 3:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        tally.add("rest_desync_attempt", f"{data.count(b'HTTP/1.1 ')} responses to 2 requests",
                  {"2 responses to 2 requests"})


def rest_largest_valid(port, tally, shape, count=2):
    """Valid REST bodies as large as the body cap allows (3000 images, 11 MiB of JSON): real
    work, here to measure how long it holds up the other calls."""
    body = post("/v1/models/ganem_enet:predict", {"inputs": {"images": np.zeros((3000, *shape), np.uint8).tolist()}})
    for _ in range(count):
        tally.add("rest_largest_valid_body", http_exchange(port, body), {200})


def slow_and_idle(rest_port, grpc_port, tally, idle=200, trickle=8, seconds=8.0):
    """Idle REST sockets past the connection cap, bodies trickled a byte at a time, idle gRPC
    channels; all closed after `seconds`."""
    import grpc

    sockets, channels = [], []
    try:
        for _ in range(idle):
            try:
                sockets.append(socket.create_connection((HOST, rest_port), timeout=5))
                tally.add("rest_idle_connection", "opened")
            except OSError:
                tally.add("rest_idle_connection", "refused at connect")
        trickling = []
        for _ in range(trickle):
            try:
                sock = socket.create_connection((HOST, rest_port), timeout=5)
                sock.sendall(b"POST /v1/models/ganem_enet:predict HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 100000\r\n\r\n")
                trickling.append(sock)
            except OSError:
                tally.add("rest_trickled_body", "refused at connect")
        for _ in range(40):
            channels.append(grpc.insecure_channel(f"{HOST}:{grpc_port}"))
            grpc.channel_ready_future(channels[-1]).result(timeout=10)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for sock in list(trickling):
                try:
                    sock.sendall(b" ")
                except OSError:
                    trickling.remove(sock)
                    tally.add("rest_trickled_body", "closed by server")
            time.sleep(0.25)
        for sock in trickling:
            tally.add("rest_trickled_body", "still open at the end")
        # What happened to the idle sockets: refused with a 503, or closed after the idle timeout.
        for sock in sockets:
            sock.settimeout(0.2)
            try:
                data = sock.recv(64)
                tally.add("rest_idle_connection_fate", "503" if b" 503 " in data else "closed" if not data else "other")
            except TimeoutError:
                tally.add("rest_idle_connection_fate", "still open")
            except OSError:
                tally.add("rest_idle_connection_fate", "closed")
        tally.add("grpc_idle_channels", f"{len(channels)} opened")
    finally:
        for sock in sockets:
            sock.close()
        for channel in channels:
            channel.close()


def status_probe(port):
    """GetModelStatus every 0.1 s until terminated; one JSON line per call: [time, ms, code]."""
    import signal

    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        while True:
            tick, at = time.perf_counter(), time.time()
            try:
                stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "ganem_enet"}),
                                    timeout=30)
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
            print(json.dumps([at, round(1000 * (time.perf_counter() - tick), 2), code]), flush=True)
            time.sleep(0.1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--status-probe"]:
        return status_probe(int(argv[1]))
    parser = argparse.ArgumentParser(prog="python benchmarks/serving_abuse.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the malformed-request phases")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving_abuse.json"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    from export import export_servables
    from zoo.ganem import GANEM

    model = GANEM((28, 28, 1), 10, seed=0)
    new_model = GANEM((28, 28, 1), 10, seed=99)
    shape, latent = tuple(model.data_shape), model.latent_dim
    base = Path(tempfile.mkdtemp(prefix="serving-abuse-"))
    export_servables(model, base)
    grpc_port, rest_port = free_ports(2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = open(base / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "serving.server", "--model_config_file",
                               str(base / "models.config"), "--port", str(grpc_port), "--rest_api_port",
                               str(rest_port), "--file_system_poll_wait_seconds", "0.5"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    tally = Tally()
    good = collections.Counter()
    status_ms, status_at, spans = [], [], {}
    stop = threading.Event()
    try:
        ZooClient(HOST, grpc_port, retries=10, backoff=0.5).metadata()  # wait until up
        watch = ProcWatch(server.pid)
        rss_start = int(watch.status()["VmRSS"].split()[0])
        watch.start()
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(4, *shape)).astype(np.float32)
        expected = [model.cluster_probs(images).numpy(), new_model.cluster_probs(images).numpy()]

        def well_formed():
            """Valid calls all along, gRPC and REST, each answer checked against both versions."""
            clients = [ZooClient(HOST, grpc_port, retries=4, backoff=0.2),
                       ZooClient(HOST, rest_port, protocol="rest", retries=4, backoff=0.2)]
            i = 0
            while not stop.is_set():
                client = clients[i % 2]
                i += 1
                try:
                    probs = client.classify(images)["probabilities"]
                    which = [v for v, e in enumerate(expected) if np.allclose(probs, e, atol=1e-4)]
                    good["correct_v1" if which == [0] else "correct_v2" if which == [1] else "wrong"] += 1
                except ServingClientError as err:
                    good[f"failed_{client.protocol}_{err.code}"] += 1
                stop.wait(0.05)
            for client in clients:
                client.close()

        # Status calls from their own process: this one builds big requests, which would
        # stall a thread here and be counted against the server.
        probe = subprocess.Popen([sys.executable, __file__, "--status-probe", str(grpc_port)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        probe.stdout.readline()  # the probe is up
        background = [threading.Thread(target=well_formed)]
        for t in background:
            t.start()
        phases = {}

        def phase(name, fn, *fn_args):
            tick, wall = time.monotonic(), time.time()
            fn(*fn_args)
            spans[name] = (wall, time.time())
            phases[name] = round(time.monotonic() - tick, 1)
            print(f"{name}: {phases[name]} s, {tally.tried()} abusive requests so far", flush=True)

        phase("grpc_malformed", grpc_abuse, grpc_port, tally, shape, latent, args.rounds)
        phase("rest_malformed", rest_abuse, rest_port, tally, shape, args.rounds)
        phase("rest_largest_valid_bodies", rest_largest_valid, rest_port, tally, shape)
        swap = threading.Thread(target=lambda: (time.sleep(1.0), export_servables(new_model, base)))
        swap.start()  # a new version lands while the flood and the slow clients run
        phase("grpc_flood_with_version_swap", grpc_flood, grpc_port, tally, shape)
        phase("slow_and_idle", slow_and_idle, rest_port, grpc_port, tally)
        swap.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and good["correct_v2"] < 5:  # answers from the new version too
            time.sleep(0.2)
        stop.set()
        for t in background:
            t.join()
        probe.terminate()
        for line in probe.communicate(timeout=30)[0].splitlines():
            at, ms, code = json.loads(line)
            if code != "OK":
                good[f"status_failed_{code}"] += 1
                continue
            status_ms.append(ms)
            status_at.append((next((name for name, (t0, t1) in spans.items() if t0 <= at <= t1), "between"), ms))
        # Still serving: one more of each kind, after everything.
        final = {}
        for protocol, port in (("grpc", grpc_port), ("rest", rest_port)):
            client = ZooClient(HOST, port, protocol=protocol, retries=2)
            try:
                probs = client.classify(images)["probabilities"]
                final[protocol] = bool(np.allclose(probs, expected[1], atol=1e-4))
            except ServingClientError as err:
                final[protocol] = f"failed: {err}"
            client.close()
        watch.stop.set()
        watch.join()
        fields = watch.status()
        alive = server.poll() is None
    finally:
        stop.set()
        server.kill()
        server.wait()
        log.close()
    log_lines = (base / "server.log").read_text().splitlines()
    result = {
        "benchmark": "serving_abuse",
        "model": "ganem", "input_shape": list(shape),
        "abusive_requests_tried": tally.tried(),
        "abuse_outcomes": {k: dict(v) for k, v in sorted(tally.outcomes.items())},
        "unexpected_outcomes": tally.unexpected[:20],
        "unexpected_count": len(tally.unexpected),
        "well_formed": {"sent": sum(v for k, v in good.items() if not k.startswith("status")),
                        **{k: v for k, v in sorted(good.items()) if not k.startswith("status")}},
        "status_checks": {"answered": len(status_ms),
                          "failed": sum(v for k, v in good.items() if k.startswith("status")),
                          "p50_ms": round(float(np.percentile(status_ms, 50)), 1) if status_ms else None,
                          "max_ms": round(max(status_ms), 1) if status_ms else None,
                          "max_ms_by_phase": {name: round(max(ms for p, ms in status_at if p == name), 1)
                                              for name in dict.fromkeys(p for p, _ in status_at)}},
        "server": {"rss_after_start_mib": round(rss_start / 1024, 1),
                   "peak_rss_mib": round(int(fields.get("VmHWM", "0 kB").split()[0]) / 1024, 1),
                   "peak_rss_sampled_mib": round(watch.max_rss_kib / 1024, 1),
                   "peak_threads": watch.max_threads, "threads_at_end": int(fields.get("Threads", 0)),
                   "tracebacks_in_log": sum("Traceback" in line for line in log_lines)},
        "still_serving_at_end": {"process_alive": alive, **final},
        "phases_seconds": phases,
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("abusive_requests_tried", "unexpected_count", "well_formed",
                                             "status_checks", "server", "still_serving_at_end")}, indent=2))
    print(f"wrote {args.out}")
    return 0 if alive and not tally.unexpected and final.get("grpc") is True and final.get("rest") is True else 1


if __name__ == "__main__":
    sys.exit(main())
