#!/usr/bin/env python
"""The cost of two workers on one machine: GAN-EM with MultiWorkerMirroredStrategy (two
processes on 127.0.0.1, TF_CONFIG) against one process, same flags, same global batch.

Both use the trainer's own command line and code path (the one multi-machine runs use);
the figures are the trainer's ms per M-step and E-step and the wall time, from metrics.json.

    python benchmarks/multiworker_overhead.py [--max-steps 120] [-- TRAINER_FLAGS]
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainers.local_cluster import worker_configs  # noqa: E402

BASE = ["--dataset", "mnist5k", "--first-m-steps", "100", "--m-steps", "20", "--e-steps", "20", "--iterations", "2",
        "--quiet", "--no-export"]


def launch(run_dir, flags, workers):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "trainers.ganem", "--run-dir", str(run_dir), *flags]
    if workers == 1:
        procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    else:
        procs = [subprocess.Popen(cmd + ["--strategy", "multiworker"], cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env={**env, "TF_CONFIG": tf_config})
                 for tf_config in worker_configs(workers)]
    started = time.perf_counter()
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - started
    for p, err in zip(procs, errors):
        if p.returncode:
            sys.exit(f"multiworker_overhead.py: error: a trainer failed (exit {p.returncode}): "
                     f"{err.strip().splitlines()[-1] if err.strip() else ''}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kept = ("steps", "wall_seconds", "ms_per_m_step", "ms_per_e_step", "replicas", "acc")
    return {key: metrics[key] for key in kept} | {"process_seconds": round(seconds, 1)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="python benchmarks/multiworker_overhead.py",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/multiworker_overhead", help="run directories")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "multiworker_overhead.json"))
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    work = Path(args.work_dir) / time.strftime("%Y%m%d-%H%M%S")
    flags = BASE + extra
    single = launch(work / "one", flags, 1)
    multi = launch(work / "two", flags, 2)
    result = {
        "benchmark": "multiworker_overhead", "trainer_flags": flags, "one_process": single, "two_workers": multi,
        "m_step_slowdown": round(multi["ms_per_m_step"] / single["ms_per_m_step"], 2),
        "e_step_slowdown": round(multi["ms_per_e_step"] / single["ms_per_e_step"], 2),
        "cpu_count": os.cpu_count(), "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"one process: {single['ms_per_m_step']} ms/M-step, {single['ms_per_e_step']} ms/E-step; "
          f"two workers: {multi['ms_per_m_step']} / {multi['ms_per_e_step']} ms "
          f"(x{result['m_step_slowdown']} / x{result['e_step_slowdown']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
