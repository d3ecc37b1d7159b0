"""Surviving faults: non-finite steps skipped in the graph, divergence recovery, corrupt
checkpoints, runs killed with SIGKILL, and determinism."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

SMALL = ["--dataset", "digits", "--first-m-steps", "6", "--m-steps", "4", "--e-steps", "2", "--iterations", "3",
         "--batch-size", "32", "--quiet", "--no-export", "--init", "gmm", "--recluster", "none"]


def trainer(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return [sys.executable, "-m", "trainers.ganem", *args], env


def newest_step(checkpoints):
    """Step of the newest checkpoint file (older ones are deleted as new ones come), or -1."""
    steps = [int(p.name.split("-")[1].split(".")[0]) for p in checkpoints.glob("ckpt-*.index")]
    return max(steps, default=-1)


def run_trainer(*args, timeout=240):
    cmd, env = trainer(*args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_a_non_finite_gradient_on_any_replica_skips_every_update(two_cpu_strategy):
    import keras
    import tensorflow as tf

    from zoo.base import apply_if_finite

    with two_cpu_strategy.scope():
        a, b = keras.Variable(np.ones(3, np.float32)), keras.Variable(np.ones(2, np.float32))
        opt_a, opt_b = keras.optimizers.Adam(0.1), keras.optimizers.SGD(0.1)
        opt_a.build([a])
        opt_b.build([b])

    @tf.function
    def step(poison_replica):
        def on_replica():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grad_a = tf.where(tf.equal(replica, poison_replica), np.nan, 1.0) * tf.ones(3)
            return apply_if_finite([(opt_a, [grad_a], [a]), (opt_b, [tf.ones(2)], [b])])

        return two_cpu_strategy.experimental_local_results(two_cpu_strategy.run(on_replica))

    assert [float(v) for v in step(tf.constant(1))] == [0.0, 0.0]  # replica 1 saw NaN: nobody applies
    np.testing.assert_array_equal(a.numpy(), np.ones(3))
    np.testing.assert_array_equal(b.numpy(), np.ones(2))
    assert int(opt_a.iterations.numpy()) == 0 and int(opt_b.iterations.numpy()) == 0
    assert [float(v) for v in step(tf.constant(-1))] == [1.0, 1.0]
    assert np.all(a.numpy() < 1) and np.all(b.numpy() < 1)
    assert int(opt_a.iterations.numpy()) == 1


@pytest.mark.parametrize("grad, loss, applied", [
    (1.0, 0.5, True), (np.nan, 0.5, False), (np.inf, 0.5, False), (-np.inf, 0.5, False), (1.0, np.nan, False),
    (1.0, np.inf, False), (3e19, 0.5, False),  # its square overflows float32 (and would poison Adam's moments)
    (-1e18, 0.5, True),
])
def test_the_guard_applies_only_finite_updates(grad, loss, applied):
    import keras
    import tensorflow as tf

    from zoo.base import apply_if_finite

    a = keras.Variable(np.ones(3, np.float32))
    optimizer = keras.optimizers.SGD(1e-20)
    optimizer.build([a])
    grads = [tf.constant([0.0, grad, 1.0], tf.float32)]
    result = tf.function(lambda: apply_if_finite([(optimizer, grads, [a])], tf.constant(loss, tf.float32)))()
    assert float(result) == float(applied) and int(optimizer.iterations.numpy()) == int(applied)


def test_float16_loss_scale_halves_on_overflow_and_grows_after_a_finite_streak(monkeypatch):
    import keras
    import tensorflow as tf

    from zoo import base
    from zoo.ganem import GANEM

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = GANEM((64,), 3, latent_dim=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3),
                  e_optimizer=keras.optimizers.Adam(1e-3))
    monkeypatch.setattr(base, "LOSS_SCALE_GROWTH_STEPS", 3)
    variables = model.enet.trainable_variables
    start = float(model.loss_scale.numpy())

    def step(value):
        grads = [tf.fill(v.shape, value) for v in variables]
        return float(model.apply_updates([(model.e_optimizer, grads, variables)], tf.constant(1.0)))

    assert step(np.inf) == 0.0 and float(model.loss_scale.numpy()) == start / 2
    assert [step(0.1) for _ in range(3)] == [1.0, 1.0, 1.0]
    assert float(model.loss_scale.numpy()) == start  # doubled after 3 finite steps in a row
    # The scale multiplies the loss's gradient and is divided out again.
    with tf.GradientTape() as tape:
        loss = tf.add_n([tf.reduce_sum(v) for v in variables])
    for grad in model.gradients(tape, loss, variables):
        np.testing.assert_allclose(grad.numpy(), 1.0)


def test_divergence_from_the_first_step_stops_with_one_line(tmp_path):
    result = run_trainer(*SMALL, "--run-dir", str(tmp_path / "run"), "--lr-d", "1e30", "--lr-g", "1e30",
                         "--checkpoint-every", "1", "--nan-patience", "2")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "non-finite loss" in result.stdout + result.stderr and "update skipped" in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("trainers.ganem: error: training diverged") and "Traceback" not in result.stderr
    # No good state was ever reached, so no checkpoint was written.
    assert not list((tmp_path / "run" / "checkpoints").glob("ckpt-*"))


def test_consecutive_bad_steps_go_back_to_the_last_good_checkpoint_with_lower_rates(tmp_path):
    import keras

    from trainers.ganem import Config
    from trainers.run import Run, TrainingDiverged
    from zoo.data import load_dataset
    from zoo.ganem import GANEM

    args = Config(strategy="one", run_dir=tmp_path, quiet=True, log_every=1000, checkpoint_every=1000, nan_patience=2,
                  nan_recoveries=1, nan_lr_factor=0.5)
    run = Run(args, "ganem", load_dataset("digits"))
    with run.strategy.scope():
        model = GANEM((64,), 3, latent_dim=4)
        model.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3),
                      e_optimizer=keras.optimizers.Adam(2e-3))
    run.track(model, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer, e_optimizer=model.e_optimizer)
    run.progress(100)
    good = [w.numpy().copy() for w in model.generator.weights]
    run.step_done("m", "M", {"loss": 1.0}, 0.01)
    run.save()  # the last good state, at step 1
    for weight in model.generator.weights:
        weight.assign(weight * 0 + 7.0)  # what a diverging update would have done
    run.step_done("m", "M", {"loss": 2.0}, 0.01)
    run.step_done("m", "M", {"loss": float("nan")}, 0.01)
    assert run.recoveries == 0 and run.bad_steps == 1
    run.step_done("m", "M", {"loss": float("inf")}, 0.01)
    # Back at step 1 with the good weights and every learning rate halved.
    assert run.recoveries == 1 and run.step == 1
    for weight, value in zip(model.generator.weights, good):
        np.testing.assert_allclose(weight.numpy(), value)
    assert float(model.g_optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    assert float(model.e_optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    run.step_done("m", "M", {"loss": float("nan")}, 0.01)
    with pytest.raises(TrainingDiverged, match="after 1 recoveries"):
        run.step_done("m", "M", {"loss": float("nan")}, 0.01)


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_is_skipped_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    first = run_trainer(*SMALL, "--run-dir", str(run_dir), "--max-steps", "8", "--checkpoint-every", "4")
    assert first.returncode == 0, first.stderr[-2000:]
    data = sorted((run_dir / "checkpoints").glob("ckpt-8.data-*"))
    assert data, list((run_dir / "checkpoints").iterdir())
    data[0].write_bytes(data[0].read_bytes()[: data[0].stat().st_size // 2])
    second = run_trainer("--resume", "--run-dir", str(run_dir), "--max-steps", "10", "--quiet", "--no-export")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "ckpt-8 is unreadable" in second.stderr and "resumed from" in second.stderr
    assert "ckpt-4 at step 4" in second.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 10


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # Long enough that it is still running when killed, whatever the machine's load.
    cmd, env = trainer(*SMALL, "--run-dir", str(run_dir), "--checkpoint-every", "2", "--first-m-steps", "100000")
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = run_dir / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and newest_step(checkpoints) < 6:
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(checkpoints))
    saved_step = int(latest.rsplit("-", 1)[1])
    assert saved_step >= 6
    resumed = run_trainer("--resume", "--run-dir", str(run_dir), "--max-steps", str(saved_step + 3), "--quiet",
                          "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {saved_step}" in resumed.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == saved_step + 3


@pytest.mark.slow
def test_deterministic_runs_with_the_same_seed_match(tmp_path):
    reports = []
    for name in ("a", "b"):
        result = run_trainer(*SMALL, "--run-dir", str(tmp_path / name), "--deterministic", "--max-steps", "14")
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        reports.append([(h["acc"], h["posterior_confidence"], h["prior"]) for h in metrics["history"]])
    assert reports[0] == reports[1] and len(reports[0]) == 2


@pytest.mark.slow
def test_learning_rate_flags_given_with_resume_replace_the_checkpointed_rates(tmp_path):
    import tensorflow as tf

    run_dir = tmp_path / "run"
    assert run_trainer(*SMALL, "--run-dir", str(run_dir), "--max-steps", "4").returncode == 0
    resumed = run_trainer("--resume", "--run-dir", str(run_dir), "--max-steps", "6", "--lr-d", "0.0123", "--quiet",
                          "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "--lr-d replace the checkpoint's" in resumed.stderr
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    rate = reader.get_tensor("d_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
    assert abs(float(rate) - 0.0123) < 1e-7
