"""--jit and --mixed-precision as a user runs them: the trainers train, report and export."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

SMALL = {"ganem": ["--first-m-steps", "4", "--m-steps", "4", "--e-steps", "2", "--iterations", "2",
                   "--init", "gmm", "--recluster", "none"],
         "clustergan": ["--iterations", "3", "--n-critic", "2", "--init", "none"]}


def tf_reader(run_dir):
    import tensorflow as tf

    return tf.train.load_checkpoint(str(run_dir / "checkpoints"))


def run_trainer(model, *args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", f"trainers.{model}", "--dataset", "digits", "--batch-size", "32",
                           "--quiet", *SMALL[model], *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("model, flags", [
    pytest.param("ganem", ["--jit", "--mixed-precision", "bfloat16"], marks=pytest.mark.slow),
    pytest.param("clustergan", ["--jit", "--mixed-precision", "bfloat16"], marks=pytest.mark.slow),
    pytest.param("ganem", ["--mixed-precision", "float16"], marks=pytest.mark.slow),
    # Balanced E-step draws must compile with XLA on a CPU too.
    pytest.param("ganem", ["--variant", "authors-code", "--jit", "--mixed-precision", "off"], marks=pytest.mark.slow),
])
def test_jit_and_mixed_precision_train_and_export_float32_servables(model, flags, tmp_path):
    run_dir = tmp_path / "run"
    result = run_trainer(model, *flags, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["acc"]) and metrics["steps"] > 0
    import tensorflow as tf

    config = json.loads((run_dir / "config.json").read_text())
    assert config["jit"] == ("--jit" in flags) and config["mixed_precision"] == flags[-1]
    if flags[-1] == "float16":
        reader = tf_reader(run_dir)
        assert any("loss_scale" in name for name in reader.get_variable_to_shape_map())

    enet = tf.saved_model.load(str(run_dir / "export" / f"{model}_enet" / "1"))
    out = enet.signatures["serving_default"](images=tf.zeros((3, 8, 8, 1)))
    assert out["probabilities"].dtype == tf.float32 and out["embedding"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, rtol=1e-3)


@pytest.mark.slow
def test_bfloat16_on_a_cpu_without_it_says_so(tmp_path, monkeypatch, capsys):
    from trainers import common, ganem

    monkeypatch.setattr(common, "bfloat16_is_fast", lambda: False)
    code = ganem.main(["--dataset", "digits", "--batch-size", "32", "--quiet", "--no-export", *SMALL["ganem"],
                       "--mixed-precision", "bfloat16", "--run-dir", str(tmp_path / "run")])
    assert code in (0, None)
    notes = [line for line in capsys.readouterr().err.splitlines() if "bfloat16 is emulated" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ")


@pytest.mark.slow
def test_progress_bar_shows_the_ms_per_step_metrics_json_reports(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "trainers.ganem", "--dataset", "digits", "--batch-size", "32",
                             *SMALL["ganem"], "--no-export", "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = re.findall(r"ms/step=(\d+)", result.stderr)
    assert shown, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    reported = [value for key, value in metrics.items() if key.startswith("ms_per_") and key.endswith("_step")]
    assert any(abs(int(shown[-1]) - value) <= 1 for value in reported), (shown[-1], reported)


def test_step_time_is_a_median_that_a_slow_first_step_per_iteration_does_not_move():
    from trainers.run import step_ms

    tracing, iteration = [2.0, 1.0, 0.5], [0.1] * 20
    # Each EM iteration's first step builds a new input pipeline and is several times slower.
    durations = tracing + iteration + [0.6] + iteration + [0.6] + iteration
    assert step_ms(durations) == 100.0
    assert step_ms([0.2]) == 200.0 and step_ms([]) is None


def test_metrics_json_says_where_the_run_time_went(tmp_path):
    from trainers import ganem

    run_dir = tmp_path / "run"
    assert ganem.main(["--dataset", "digits", "--batch-size", "32", "--quiet", *SMALL["ganem"],
                       "--run-dir", str(run_dir)]) in (0, None)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds = metrics["seconds"]
    expected = {"m_steps", "e_steps", "start_clustering", "posteriors", "checkpoints", "outputs", "export", "other",
                "total"}
    assert expected <= set(seconds), seconds
    # Activities never overlap: what is left over ("other") cannot be negative.
    assert all(value >= 0 for value in seconds.values()), seconds
    assert seconds["total"] >= metrics["wall_seconds"]
    assert abs(sum(v for k, v in seconds.items() if k != "total") - seconds["total"]) < 1.0
