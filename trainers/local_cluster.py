"""A multi-worker cluster on one machine (127.0.0.1), for tests, benchmarks and trying
`--strategy multiworker` without several machines: free ports and each worker's TF_CONFIG."""

import json
import socket


def free_ports(n):
    """`n` TCP ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_configs(workers):
    """TF_CONFIG strings of `workers` workers on 127.0.0.1, worker 0 (the chief) first."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(workers)]
