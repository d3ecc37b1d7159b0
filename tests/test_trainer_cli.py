"""The GAN-EM command line as a user runs it: the README's main job (bounded by
--max-steps), the run directory it leaves, --resume, --help and bad input."""

import json
import os
import subprocess
import sys

import pytest

SMALL = ["--dataset", "digits", "--first-m-steps", "4", "--m-steps", "4", "--e-steps", "2", "--iterations", "3",
         "--batch-size", "32", "--quiet", *[
             # UMAP's start and re-clustering cost a numba compile per process: tests of other
             # things start from a GMM (tests/test_ganem_start.py covers UMAP).
             "--init", "gmm", "--recluster", "none"]]


def run_trainer(*args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "trainers.ganem", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_main_job_default_command_bounded(tmp_path):
    """README command 1, as written, with --max-steps: GAN-EM on mnist5k end to end."""
    run_dir = tmp_path / "run"
    result = run_trainer("--max-steps", "3", "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist5k" and metrics["clusters"] == 10 and metrics["steps"] == 3
    for key in ("acc", "nmi", "ari", "purity", "wall_seconds"):
        assert isinstance(metrics[key], float)
    assert 0.0 <= metrics["acc"] <= 1.0
    assert "ACC" in result.stdout and "NMI" in result.stdout
    for name in ("samples.png", "confusion.png", "config.json"):
        assert (run_dir / name).stat().st_size > 0
    assert list((run_dir / "logs").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "checkpoint").exists()
    for servable in ("ganem_enet", "ganem_generator"):
        assert (run_dir / "export" / servable / "1" / "saved_model.pb").exists()
    assert (run_dir / "export" / "models.config").exists()


def test_resume_continues_step_counter_and_em_state(tmp_path):
    run_dir = tmp_path / "run"
    first = run_trainer(*SMALL, "--max-steps", "8", "--run-dir", str(run_dir), "--no-export")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["em_iterations_done"] == 1
    # Flags not given again come back from the run's config.json.
    second = run_trainer("--resume", "--run-dir", str(run_dir), "--max-steps", "14", "--quiet", "--no-export")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr and "at step 8" in second.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["steps"] == 14
    # Iteration 1 finished before the interruption, iteration 2 in the resumed process.
    assert [h["em_iteration"] for h in metrics["history"]] == [1, 2]
    assert sum(metrics["prior"]) == pytest.approx(1.0, abs=1e-3)
    # Optimizer state came back too: steps 0-3, 6-9 and 12-13 were M-steps, 4-5 and 10-11 E-steps.
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    assert reader.get_tensor("d_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 10
    assert reader.get_tensor("e_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 4


def test_help_lists_the_shared_flags_with_defaults():
    result = run_trainer("--help")
    assert result.returncode == 0
    for flag in ("--dataset", "--clusters", "--max-steps", "--batch-size", "--seed", "--run-dir", "--strategy",
                 "--labels", "--resume", "--iterations", "--m-steps", "--e-steps", "--generator-loss"):
        assert flag in result.stdout
    assert "default: mnist5k" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--clusters", "1"], "--clusters must be at least 2"),
    (["--clusters", "5000"], "exceeds the number of samples"),
    (["--dataset", "no-such-dataset"], "no-such-dataset"),
    (["--m-steps", "0"], "--m-steps must be positive"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, expected):
    result = run_trainer(*SMALL, "--run-dir", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    result = run_trainer("--resume", "--run-dir", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "no run to resume" in result.stderr
