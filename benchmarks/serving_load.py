#!/usr/bin/env python
"""Serving under load: `serving.server` on 127.0.0.1 against the same SavedModel called in-process.

Exports a GAN-EM E-net (the default mnist5k networks; `--run RUN_DIR` exports a trained run
instead), starts `python -m serving.server` in its own process, and sends a bounded load:
`--threads` client threads, each sending `--requests` `classify` calls (gRPC, official stubs
through serving.client) at batch 1 and at batch 64. Then the same calls are made by the same
number of threads on the SavedModel loaded in this process. Reports p50/p99 latency and
images per second of both, and served / in-process throughput. With `--reload`, a new
version is exported while the batch-64 load runs: every request must still get a correct
answer (the old or the new model's) or a clear error; lost or wrong answers are counted.

    python benchmarks/serving_load.py [--threads 4] [--requests 100] [--reload]
"""
import argparse
import datetime
import json
import os
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

from serving.client import ZooClient  # noqa: E402
from trainers.local_cluster import free_ports  # noqa: E402


def run_load(call, threads, requests):
    """Runs `call()` threads x requests times; returns latencies (s), wall time, errors."""
    latencies, errors, lock = [], [], threading.Lock()

    def worker():
        for _ in range(requests):
            tick = time.perf_counter()
            try:
                call()
            except Exception as err:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(err)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - tick)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, time.perf_counter() - started, errors


def merge(runs):
    return ([x for r in runs for x in r[0]], sum(r[1] for r in runs), [x for r in runs for x in r[2]])


def summary(latencies, wall, errors, batch):
    ms = 1000 * np.asarray(latencies) if latencies else np.zeros(1)
    return {"requests_ok": len(latencies), "errors": len(errors), "error_examples": errors[:3],
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "images_per_second": round(len(latencies) * batch / wall, 1), "wall_seconds": round(wall, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/serving_load.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run", default=None, help="export this trained run (default: an untrained GAN-EM)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=100, help="requests per thread and batch size")
    parser.add_argument("--rounds", type=int, default=4, help="alternating served / in-process rounds")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="images per request")
    parser.add_argument("--reload", action="store_true", help="export a new version during the last load")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving_load.json"))
    args = parser.parse_args(argv)

    import tensorflow as tf

    from export import export_servables
    from zoo.ganem import GANEM

    base = Path(tempfile.mkdtemp(prefix="serving-load-"))
    if args.run:
        from export.__main__ import load_run

        model = load_run(args.run)[0]
    else:
        model = GANEM((28, 28, 1), 10, seed=0)
    export_servables(model, base)
    (port,) = free_ports(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([sys.executable, "-m", "serving.server", "--model_config_file",
                               str(base / "models.config"), "--port", str(port), "--rest_api_port", "-1",
                               "--host", "127.0.0.1", "--file_system_poll_wait_seconds", "0.5"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ZooClient("127.0.0.1", port, model=model.zoo_name, retries=8, backoff=0.5).metadata()  # wait until up
        enet = tf.saved_model.load(str(base / f"{model.zoo_name}_enet" / "1")).signatures["serving_default"]
        rng = np.random.default_rng(0)
        results = {}
        for batch in args.batches:
            images = rng.uniform(size=(batch, *model.data_shape)).astype(np.float32)
            expected = [model.cluster_probs(images).numpy()]
            clients = threading.local()
            answered_by, answered_lock = [0, 0], threading.Lock()  # requests answered by version 1, version 2

            def served_call():
                if not hasattr(clients, "client"):
                    clients.client = ZooClient("127.0.0.1", port, model=model.zoo_name, retries=2)
                probs = clients.client.classify(images)["probabilities"]
                matches = [i for i, e in enumerate(expected) if np.allclose(probs, e, atol=1e-4)]
                if not matches:
                    raise AssertionError("wrong answer")
                with answered_lock:
                    answered_by[matches[0]] += 1

            def local_call():
                enet(images=tf.constant(images))["probabilities"].numpy()

            for _ in range(3):  # warm-up both paths
                served_call()
                local_call()
            reloader = None
            if args.reload and batch == args.batches[-1]:
                new_model = GANEM(model.data_shape, model.num_clusters, seed=99) if not args.run else model
                expected.append(new_model.cluster_probs(images).numpy())

                def reload():
                    time.sleep(0.5)
                    export_servables(new_model, base)

                reloader = threading.Thread(target=reload)
                reloader.start()
            answered_by[:] = [0, 0]
            # Alternating rounds, so that other work on the machine slows both paths alike.
            served_runs, local_runs = [], []
            for _ in range(args.rounds):
                served_runs.append(run_load(served_call, args.threads, args.requests // args.rounds))
                local_runs.append(run_load(local_call, args.threads, args.requests // args.rounds))
            served, local = (summary(*merge(runs), batch) for runs in (served_runs, local_runs))
            if reloader:
                reloader.join()
                served["answered_by_old_version"], served["answered_by_new_version"] = answered_by
            results[f"batch_{batch}"] = {"served_grpc": served, "in_process": local,
                                         "throughput_ratio": round(served["images_per_second"]
                                                                   / local["images_per_second"], 3)}
            print(f"batch {batch}: served {served['images_per_second']} img/s (p50 {served['p50_ms']} ms, "
                  f"p99 {served['p99_ms']} ms, {served['errors']} errors), in-process "
                  f"{local['images_per_second']} img/s (p50 {local['p50_ms']} ms, p99 {local['p99_ms']} ms): "
                  f"ratio {results[f'batch_{batch}']['throughput_ratio']}", flush=True)
    finally:
        server.kill()
    result = {"benchmark": "serving_load", "model": model.zoo_name, "input_shape": list(model.data_shape),
              "threads": args.threads, "requests_per_thread": args.requests, "reload": args.reload, **results,
              "cpu_count": os.cpu_count(), "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
