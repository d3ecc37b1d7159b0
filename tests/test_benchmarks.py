"""The clustering benchmark's command line: seeds run concurrently with --jobs and land in one JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(*argv):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "clustering.py"), *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_jobs_runs_every_seed_and_summarises_them(tmp_path):
    out = tmp_path / "result.json"
    result = run_benchmark("--model", "ganem", "--dataset", "digits", "--seeds", "3", "4", "--jobs", "2",
                           "--no-baselines", "--work-dir", str(tmp_path / "runs"), "--out", str(out),
                           "--", "--max-steps", "3", "--no-export", "--init", "gmm")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["seeds"] == [3, 4]
    per_seed = summary["ganem"]["per_seed"]
    assert [run["seed"] for run in per_seed] == [3, 4]
    assert len({run["run_dir"] for run in per_seed}) == 2
    assert all(Path(run["run_dir"], "metrics.json").exists() for run in per_seed)
    assert "--seed" in summary["trainer_argv"]["4"] and "4" in summary["trainer_argv"]["4"]
    # Where the time went, averaged over seeds, from each run's metrics.json `seconds`.
    assert {"m_steps", "total"} <= set(summary["ganem"]["seconds_mean"])
    assert summary["ganem"]["process_seconds_mean"] >= summary["ganem"]["wall_seconds_mean"]


def test_bad_jobs_is_a_one_line_error(tmp_path):
    result = run_benchmark("--jobs", "0", "--work-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["clustering.py: error: --jobs must be at least 1 (got 0)"]


def test_benchmarks_started_together_get_their_own_run_directories(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from clustering import fresh_directory

    first = fresh_directory(tmp_path / "runs" / "ganem_mnist5k-20261125-203443")
    second = fresh_directory(tmp_path / "runs" / "ganem_mnist5k-20261125-203443")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "ganem_mnist5k-20261125-203443-2"


def test_paper_table_collects_rows_run_separately(tmp_path):
    # Rows already measured (committed JSON): --collect trains nothing and tables them.
    out = tmp_path / "table.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ganem_paper_table.py"), "--collect",
                             "--tag", "augment-all", "--rows", "100 labels", "1000 labels", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(out.read_text())
    rows = {row["row"]: row for row in table["rows"]}
    measured = json.loads((REPO / rows["1000 labels"]["json"]).read_text())["ganem"]["test_error_mean"]
    assert rows["1000 labels"]["error_mean"] == round(100 * measured, 2)
    assert "| 100 labels |" in result.stdout
    missing = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ganem_paper_table.py"), "--collect",
                              "--tag", "no-such-tag", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "no results for row" in missing.stderr


def test_gain_over_start_is_final_minus_initial_per_seed():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from clustering import gain_over_start

    runs = [{"acc": 0.9, "nmi": 0.8, "ari": 0.7, "initial": {"acc": 0.8, "nmi": 0.8, "ari": 0.5}},
            {"acc": 0.7, "nmi": 0.6, "ari": 0.5, "initial": {"acc": 0.8, "nmi": 0.6, "ari": 0.5}}]
    summary = gain_over_start(runs)
    assert summary["initial_acc_mean"] == 0.8
    assert abs(summary["gain_acc_mean"]) < 1e-9 and abs(summary["gain_acc_std"] - 0.1) < 1e-9
    assert gain_over_start([{"acc": 0.5}]) == {}  # models without a recorded start


def _result(model, acc, timestamp, flags=(), curve=True):
    runs = [{"acc": acc, "wall_seconds": 60.0 * (seed + 1), "seed": seed,
             **({"curve": [[10.0, acc / 2], [60.0 * (seed + 1), acc]]} if curve else {})} for seed in range(2)]
    return {"benchmark": f"{model}_digits", "dataset": "digits", "model": model, "timestamp": timestamp,
            "trainer_flags": list(flags), "benchmark_argv": ["clustering.py"],
            model: {"acc_mean": acc, "acc_std": 0.0, "per_seed": runs},
            "baselines": {"kmeans_pixels": {"acc_mean": 0.5, "wall_seconds_mean": 1.0}}}


def test_accuracy_time_figure_takes_each_models_newest_default_run(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from clustering import accuracy_curve
    from zoo_table import accuracy_time_figure, default_runs

    files = {"a_old.json": _result("ganem", 0.6, "2026-01-01"), "a_new.json": _result("ganem", 0.9, "2026-02-01"),
             "a_flags.json": _result("ganem", 0.99, "2026-03-01", flags=["--max-steps", "3"]),
             "b.json": _result("kmgan", 0.7, "2026-01-01", flags=["--no-export"], curve=False)}
    for name, result in files.items():
        (tmp_path / name).write_text(json.dumps(result))
    runs = default_runs(tmp_path, "digits")
    assert {model: run[model]["acc_mean"] for model, run in runs.items()} == {"ganem": 0.9, "kmgan": 0.7}
    figure = accuracy_time_figure(tmp_path, "digits")
    assert figure == tmp_path / "acc_vs_time_digits.png" and figure.stat().st_size > 0
    assert accuracy_time_figure(tmp_path, "mnist5k") is None

    history = [{"acc": 0.4, "wall_seconds": 12.5}, {"acc": 0.5}, {"acc": 0.6, "wall_seconds": 30.0}]
    assert accuracy_curve({"history": history, "acc": 0.7, "wall_seconds": 40.0}) == [[12.5, 0.4], [30.0, 0.6],
                                                                                     [40.0, 0.7]]


@pytest.mark.slow
def test_step_overhead_times_the_trainers_step_against_a_minimal_one(tmp_path):
    out = tmp_path / "overhead.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_overhead.py"), "--models", "ganem",
                             "--dataset", "digits", "--rounds", "1", "--steps", "2", "--warmup", "1",
                             "--instances", "2",
                             "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    phases = json.loads(out.read_text())["models"]["ganem"]
    assert set(phases) == {"m", "e"}
    for timing in phases.values():
        assert timing["ms_trainer"] > 0 and timing["ms_minimal"] > 0 and timing["ratio"] > 0
        assert all(len(copies) == 2 for copies in timing["rounds"].values())
        assert all(spread >= 0 for spread in timing["instance_spread"].values())
