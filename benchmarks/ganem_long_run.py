#!/usr/bin/env python
"""GAN-EM from the paper's start: a long run from uniform soft labels, on a schedule shaped like
the authors' code (many short EM iterations, every learning rate x0.98 per iteration), stopped
after a wall-clock budget; ACC against wall time, beside other runs' curves.

    python benchmarks/ganem_long_run.py --budget-minutes 100 --compare benchmarks/runs/ganem_mnist5k-*/seed0

The authors' code trains 1,000 EM iterations of 5 passes over the data (M-step) and 200 E-net
updates; on mnist5k a pass is 78 batches of 64, so an iteration here is 390 M-steps and 200
E-steps by default (`--` flags after the benchmark's own go to the trainer and override them).
The trainer logs every EM iteration to its run's history.jsonl with the wall time, so a run cut
off by the budget still gives its curve. Writes benchmarks/results/ganem_long_run_<tag>.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from clustering import fresh_directory, machine_info, split_argv  # noqa: E402

from trainers.config import HelpFormatter  # noqa: E402
from trainers.run import read_history  # noqa: E402

# The authors' schedule, scaled to mnist5k: 5 passes of 78 batches, 200 E-net updates, x0.98.
AUTHORS_SHAPE = ["--init", "uniform", "--first-m-steps", "390", "--m-steps", "390", "--e-steps", "200",
                 "--iterations", "1000", "--lr-decay", "0.98"]


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/ganem_long_run.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-minutes", type=float, default=100.0,
                        help="wall-clock budget of the run; it is stopped (Ctrl-C, so it checkpoints) after it")
    parser.add_argument("--compare", nargs="*", default=[],
                        help="run directories whose history.jsonl to plot beside (e.g. default runs)")
    parser.add_argument("--tag", default="uniform", help="names the result files")
    parser.add_argument("--plot-only", metavar="RUN_DIR", default=None,
                        help="do not train: plot the history of this finished or interrupted long run")
    return parser


def history(run_dir):
    return read_history(run_dir, "em_iteration")


def curve(rows):
    return [r.get("wall_seconds") for r in rows], [r.get("acc") for r in rows]


def main(argv=None):
    ours, trainer_flags = split_argv(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(ours)
    results = REPO / "benchmarks" / "results"
    if args.plot_only:
        run_dir, wall = Path(args.plot_only), None
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = fresh_directory(REPO / "benchmarks" / "runs" / f"ganem_long_run_{args.tag}-{stamp}")
        cmd = [sys.executable, "-m", "trainers.ganem", "--dataset", args.dataset, "--seed", str(args.seed),
               "--run-dir", str(run_dir), "--quiet", "--no-export", *AUTHORS_SHAPE, *trainer_flags]
        print("running", " ".join(cmd), flush=True)
        started = time.time()
        with open(run_dir.with_name(run_dir.name + ".log"), "w") as log:
            # SIGINT restored for the trainer: a background shell starts it ignored.
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(REPO)},
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                proc.wait(timeout=args.budget_minutes * 60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # the trainer checkpoints and exits
                proc.wait(timeout=300)
        wall = round(time.time() - started, 1)
    rows = history(run_dir)
    series = {f"--init uniform, authors' schedule (seed {args.seed})": curve(rows)}
    for other in args.compare:
        other_rows = history(other)
        flags = json.loads((Path(other) / "config.json").read_text()) if (Path(other) / "config.json").exists() else {}
        series[f"{Path(other).parent.name}/{Path(other).name} (--init {flags.get('init', '?')})"] = curve(other_rows)
    from zoo import plots

    figure = results / f"ganem_long_run_{args.tag}.png"
    plots.time_curves_png(series, figure, "wall seconds", "ACC (Hungarian)",
                          title=f"GAN-EM on {args.dataset}: ACC against wall time")
    out = results / f"ganem_long_run_{args.tag}.json"
    out.write_text(json.dumps({
        "run_dir": str(run_dir), "trainer_flags": AUTHORS_SHAPE + trainer_flags, "wall_seconds": wall,
        "budget_minutes": args.budget_minutes, "history": rows,
        "compare": {str(o): history(o) for o in args.compare}, "machine": machine_info(),
    }, indent=2) + "\n")
    if rows:
        best = max(rows, key=lambda r: r.get("acc", 0))
        print(f"{len(rows)} EM iterations in {rows[-1]['wall_seconds']} s: ACC {rows[0].get('acc')} -> "
              f"{rows[-1].get('acc')} (best {best.get('acc')} at iteration {best.get('em_iteration')})")
    print(f"wrote {out} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
