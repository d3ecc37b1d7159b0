#!/usr/bin/env python
"""Data bigger than memory: peak RSS of GAN-EM training on, and assigning, a synthetic
folder of 200,000 64x64x3 images (2.3 GiB as bytes, 9.2 GiB as float32), which is over the
default memory budget and so is decoded once into the cache and read from disk batch by batch.

    python benchmarks/large_folder.py [--images 200000] [--steps 500] [--mnist5k] [-- TRAINER_FLAGS]

Writes the folder (once; kept for later runs) under --work-dir, trains `python -m
trainers.ganem` for --steps steps (one EM iteration: M-steps, E-steps and the pass over every
real image), assigns the folder with `python -m export.assign`,
and reports each process's peak RSS (from wait4) and wall time. --mnist5k also measures
the README's default run (`python -m trainers.ganem`, mnist5k) the same way.
"""
import argparse
import datetime
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


def _write_chunk(task):
    """Images start..stop: a coloured blob per class on a noisy background (PNG)."""
    from PIL import Image

    folder, start, stop, side = task
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for i in range(start, stop):
        target = Path(folder) / f"{i // 1000:03d}_{i:06d}.png"
        if target.exists():
            continue
        rng = np.random.default_rng(i)
        c = i % CLASSES
        cy, cx = 0.25 + 0.5 * (c // 5), 0.1 + 0.2 * (c % 5)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        colour = np.array([(c * 37) % 255, (c * 91) % 255, (c * 151) % 255], np.float32)
        image = 40 + blob[..., None] * colour + rng.normal(0, 12, (side, side, 3))
        tmp = target.with_name(f".{target.name}.tmp")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, target)


def make_folder(folder, count, side, workers):
    folder.mkdir(parents=True, exist_ok=True)
    chunk = 5000
    tasks = [(str(folder), s, min(s + chunk, count), side) for s in range(0, count, chunk)]
    with multiprocessing.Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_chunk, tasks):
            pass


def measured(cmd, log, cache):
    """Runs cmd; returns (exit code, peak RSS in MiB of that process, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "ZOO_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, round(usage.ru_maxrss / 1024, 1), round(time.perf_counter() - started, 1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="python benchmarks/large_folder.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500, help="training steps (--max-steps)")
    parser.add_argument("--workers", type=int, default=2, help="processes writing the folder")
    parser.add_argument("--work-dir", default=str(REPO / "benchmarks" / "runs" / "large_folder"),
                        help="holds the image folder, the run directory and the logs")
    parser.add_argument("--mnist5k", action="store_true", help="also measure the default mnist5k run")
    parser.add_argument("--no-folder", action="store_true", help="only the mnist5k run (with --mnist5k)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "large_folder.json"))
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.images < 2 or args.side < 16 or args.steps < 1:
        parser.error("--images must be >= 2, --side >= 16, --steps >= 1")

    work = Path(args.work_dir)
    cache = work / "cache"  # the decoded folder goes here, not into the user's cache
    folder = work / f"images_{args.images}_{args.side}"
    report = {"benchmark": "large_folder",
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()}}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_folder:
        started = time.perf_counter()
        make_folder(folder, args.images, args.side, args.workers)
        report.update(images=args.images, shape=[args.side, args.side, 3],
                      bytes_as_uint8=args.images * args.side * args.side * 3,
                      folder_seconds=round(time.perf_counter() - started, 1))
        measure_folder(args, folder, work, cache, stamp, extra, report)
    if args.mnist5k:
        default = [sys.executable, "-m", "trainers.ganem", "--quiet", "--run-dir", str(work / f"mnist5k-{stamp}")]
        code, rss, wall = measured(default, work / f"mnist5k-{stamp}.log", cache)
        report["mnist5k_default"] = {"argv": default[1:], "exit": code, "peak_rss_mib": rss, "wall_seconds": wall}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(report, indent=2))
    failed = [k for k in ("train", "assign", "mnist5k_default") if report.get(k, {}).get("exit")]
    return 1 if failed else 0


def measure_folder(args, folder, work, cache, stamp, extra, report):
    run_dir = work / f"run-{stamp}"
    # One EM iteration of --steps: 80% M-steps, 20% E-steps, then the pass over every image
    # (whose posteriors the end of the run reuses).
    e_steps = max(1, args.steps // 5)
    schedule = ["--first-m-steps", str(max(1, args.steps - e_steps)), "--e-steps", str(e_steps), "--iterations", "1"]
    train = [sys.executable, "-m", "trainers.ganem", "--dataset", str(folder), "--max-steps", str(args.steps),
             "--quiet", "--run-dir", str(run_dir), *schedule, *extra]
    code, rss, wall = measured(train, work / f"train-{stamp}.log", cache)
    report["train"] = {"argv": train[1:], "exit": code, "peak_rss_mib": rss, "wall_seconds": wall}
    if code == 0:
        out = work / f"assign-{stamp}.csv"
        assign = [sys.executable, "-m", "export.assign", "--run", str(run_dir), "--dataset", str(folder),
                  "--out", str(out)]
        code, rss, wall = measured(assign, work / f"assign-{stamp}.log", cache)
        report["assign"] = {"argv": assign[1:], "exit": code, "peak_rss_mib": rss, "wall_seconds": wall}


if __name__ == "__main__":
    sys.exit(main())
