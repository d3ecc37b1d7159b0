"""Run directories: one trainer per directory, never a finished run overwritten by a new one,
and a resumed run's config.json checked like command-line flags. Flags are parsed in-process
(no TensorFlow needed), with one command-line check of the exit code."""

import json
import os
import subprocess
import sys

import pytest

from trainers import common
from trainers.ganem import GANEMTask


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    yield
    for run_dir in list(common._held):
        common.release_run_dir(run_dir)


def parse(*argv):
    return common.parse_args(GANEMTask.build_parser(), ["--dataset", "digits", *argv], "ganem", GANEMTask.config_class)


def test_default_run_directories_started_in_the_same_second_are_distinct(monkeypatch):
    monkeypatch.setattr(common.time, "strftime", lambda fmt: "20260101-000000")
    first, second = parse("--seed", "1"), parse("--seed", "2")
    assert first.run_dir != second.run_dir and first.run_dir.is_dir() and second.run_dir.is_dir()
    assert second.run_dir.name == first.run_dir.name + "-2"


def test_a_run_directory_is_locked_while_a_trainer_owns_it(tmp_path):
    args = parse("--run-dir", str(tmp_path / "run"))
    assert (args.run_dir / common.RUN_LOCK).read_text().strip() == str(os.getpid())
    with pytest.raises(common.UsageError, match="in use by another trainer"):
        parse("--run-dir", str(tmp_path / "run"))
    (tmp_path / "run" / "config.json").write_text(json.dumps({"dataset": "digits"}))
    with pytest.raises(common.UsageError, match="in use by another trainer"):
        parse("--run-dir", str(tmp_path / "run"), "--resume")
    common.release_run_dir(args.run_dir)
    assert parse("--run-dir", str(tmp_path / "run"), "--resume").run_dir == tmp_path / "run"


def test_a_non_empty_run_directory_needs_resume(tmp_path):
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "config.json").write_text(json.dumps({"dataset": "digits"}))
    with pytest.raises(common.UsageError, match="not empty: continue its run with --resume"):
        parse("--run-dir", str(tmp_path / "old"))
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == [".lock", "checkpoints", "config.json"]
    (tmp_path / "empty").mkdir()
    assert parse("--run-dir", str(tmp_path / "empty")).run_dir == tmp_path / "empty"
    (tmp_path / "file").write_text("x")
    with pytest.raises(common.UsageError, match="not a directory"):
        parse("--run-dir", str(tmp_path / "file"))


def test_non_chief_workers_share_the_chiefs_directory(tmp_path, monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    chief = parse("--run-dir", str(tmp_path / "run"), "--strategy", "multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    other = parse("--run-dir", str(tmp_path / "run"), "--strategy", "multiworker")
    assert chief.run_dir == other.run_dir == tmp_path / "run"


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not readable JSON"),
    ('{"dataset": "digits"', "not readable JSON"),  # cut short
    ("[1, 2]", "JSON object of flags, not a list"),
    ('{"mixed_precision": "float64"}', "mixed_precision = \"float64\" is not a valid --mixed-precision"),
    ('{"batch_size": 64.5}', "batch_size = 64.5 is not a valid --batch-size"),
    ('{"clusters": "ten"}', "clusters = \"ten\" is not a valid --clusters"),
    ('{"clusters": true}', "not a valid --clusters"),
    ('{"dataset": ["digits"]}', "not a valid --dataset"),
    ('{"jit": "yes"}', None),  # a run flag: never taken from the file
    ('{"deterministic": "yes"}', "not a valid --deterministic"),
    ('{"seed": null}', "not a valid --seed"),
    ('{"nan_lr_factor": NaN}', "not a valid --nan-lr-factor"),
])
def test_a_resumed_config_is_checked_like_flags(tmp_path, content, expected):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(content)
    if expected is None:
        assert parse("--run-dir", str(tmp_path / "run"), "--resume").jit is False
        return
    with pytest.raises(common.UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        parse("--run-dir", str(tmp_path / "run"), "--resume")
    assert "\n" not in str(err.value)


def test_a_valid_saved_config_comes_back_converted(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        {"dataset": "digits", "batch_size": 32, "nan_lr_factor": 1 / 4, "mixed_precision": "bfloat16",
         "deterministic": True, "labels_file": None, "unknown_key": 3}))
    args = parse("--run-dir", str(tmp_path / "run"), "--resume", "--seed", "7")
    assert (args.batch_size, args.nan_lr_factor, args.mixed_precision, args.deterministic, args.seed) == \
        (32, 0.25, "bfloat16", True, 7)
    assert not hasattr(args, "unknown_key")


def test_the_command_line_refuses_a_bad_saved_config_with_exit_code_2(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"batch_size": 64.5}')
    result = subprocess.run([sys.executable, "-m", "trainers.ganem", "--resume", "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "--batch-size" in lines[0], result.stderr[-2000:]


def test_a_directory_created_for_a_run_that_failed_to_start_is_removed(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainers.ganem", "--run-dir", str(tmp_path / "new"),
                             "--dataset", "no-such-dataset"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2 and not (tmp_path / "new").exists()


def test_history_survives_a_half_written_last_line(tmp_path):
    from types import SimpleNamespace

    from trainers.run import Run

    good = [{"em_iteration": 1, "acc": 0.5}, {"em_iteration": 2, "acc": 0.6}]
    lines = [json.dumps(r) for r in good]
    run = SimpleNamespace(dir=tmp_path)
    (tmp_path / "history.jsonl").write_text("\n".join(lines) + '\n{"em_iteration": 3, "acc": 0.')
    assert Run.history(run, "em_iteration") == good
    # The next process appends to the cut-off line; its record is still found, and the
    # iteration logged twice keeps its last record.
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write(json.dumps({"em_iteration": 3, "acc": 0.7}) + "\n" + "\x00\xff garbage\n[1, 2]\n"
                + json.dumps({"em_iteration": 2, "acc": 0.65}) + "\n")
    assert Run.history(run, "em_iteration") == [{"em_iteration": 1, "acc": 0.5}, {"em_iteration": 2, "acc": 0.65},
                                                {"em_iteration": 3, "acc": 0.7}]
