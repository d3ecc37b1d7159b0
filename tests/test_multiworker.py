"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (TF_CONFIG), through
the trainers' own strategy.run loop: same weights on both workers, the same result as one
process with the same global batch, and a killed job rejoining from the shared checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_robustness import newest_step

from trainers.local_cluster import worker_configs

SMALL = ["--dataset", "digits", "--first-m-steps", "6", "--m-steps", "4", "--e-steps", "2", "--iterations", "2",
         "--batch-size", "32", "--quiet", "--no-export", "--init", "gmm", "--recluster", "none"]


def start_workers(run_dir, *flags):
    workers = []
    for tf_config in worker_configs(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "trainers.ganem", "--strategy", "multiworker", "--run-dir", str(run_dir), *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def finish(workers, timeout=240):
    outputs = [w.communicate(timeout=timeout) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    return outputs


def weights(checkpoint_dir):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.endswith("VARIABLE_VALUE") and reader.get_tensor(name).dtype != object}


@pytest.mark.slow
def test_two_workers_train_one_model_equal_to_one_process(tmp_path):
    finish(start_workers(tmp_path / "multi", *SMALL))
    chief, other = weights(tmp_path / "multi" / "checkpoints"), weights(tmp_path / "multi" / "workers" / "worker-1")
    assert chief.keys() == other.keys() and len(chief) > 50
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    metrics = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["steps"] == 14

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    single = subprocess.run([sys.executable, "-m", "trainers.ganem", "--run-dir", str(tmp_path / "single"), *SMALL],
                            env=env, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = weights(tmp_path / "single" / "checkpoints")
    for name in chief:
        np.testing.assert_allclose(chief[name], alone[name], rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_a_killed_job_rejoins_from_the_shared_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    flags = [*SMALL, "--first-m-steps", "100000", "--checkpoint-every", "3"]
    workers = start_workers(run_dir, *flags)
    deadline = time.time() + 180
    while time.time() < deadline and newest_step(run_dir / "checkpoints") < 6:
        time.sleep(0.2)
    # Worker 1 dies; as under a cluster manager (the BackupAndRestore pattern) the job is restarted.
    workers[1].send_signal(signal.SIGKILL)
    workers[0].send_signal(signal.SIGKILL)
    for worker in workers:
        worker.wait(timeout=30)
    import tensorflow as tf

    saved = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).rsplit("-", 1)[1])
    resumed = start_workers(run_dir, "--resume", "--max-steps", str(saved + 4), "--quiet", "--no-export")
    outputs = finish(resumed)
    for _, err in outputs:
        assert f"at step {saved}" in err  # both workers restored the chief's checkpoint
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == saved + 4
    chief, other = weights(run_dir / "checkpoints"), weights(run_dir / "workers" / "worker-1")
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
