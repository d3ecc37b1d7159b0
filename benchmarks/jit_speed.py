#!/usr/bin/env python
"""Does `--jit` (XLA) make a GAN-EM training step faster? Both variants in one process.

Builds GAN-EM as `python -m trainers.ganem` does (defaults, batch 64, mnist5k), makes its
M-step and E-step with and without XLA exactly as the trainer does (`common.replicated_step`,
results read back to the host after every step), and times them in alternating rounds
(`--rounds` x `--steps` steps per variant), so that a busy machine slows both alike.
Reports the median ms per step of each and the speed-up (no-XLA time / XLA time).

    python benchmarks/jit_speed.py [--rounds 5] [--steps 20] [--out benchmarks/results/jit_speed.json]
    python benchmarks/jit_speed.py --mixed-precision bfloat16 --out benchmarks/results/jit_speed_bf16.json
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/jit_speed.py --out benchmarks/results/jit_speed_no_onednn.json
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from trainers import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/jit_speed.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k", help="dataset spec (sets the shapes)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per variant")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--mixed-precision", choices=["off", "bfloat16"], default="off",
                        help="build the model under Keras' mixed_bfloat16 policy, as the trainers' flag does")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "jit_speed.json"), help="output JSON")
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.batch_size) < 1:
        parser.error("--rounds, --steps and --batch-size must be positive")

    import keras
    import tensorflow as tf

    from zoo.ganem import GANEM

    if args.mixed_precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    dataset = common.zoo_data.load_dataset(args.dataset)
    keras.utils.set_random_seed(0)
    strategy = common.make_strategy("auto")
    with strategy.scope():
        # The trainer's defaults are the model's (zoo.configs).
        model = GANEM(dataset.input_shape, 10)
        model.compile()
    w = np.full((len(dataset), 10), 0.1, np.float32)
    batches = common.distributed_batches(strategy, (dataset.x, w), args.batch_size, 0)
    steps = {(phase, jit): common.replicated_step(strategy, fn, jit=jit)
             for phase, fn in (("m", model.m_step), ("e", model.e_step)) for jit in (False, True)}
    times = {key: [] for key in steps}
    warmup = {}
    for key, step in steps.items():  # tracing and XLA compilation, untimed
        tick = time.perf_counter()
        for _ in range(3):
            {k: float(v) for k, v in step(batches if key[0] == "m" else None).items()}
        warmup[key] = time.perf_counter() - tick
    for _ in range(args.rounds):
        for key, step in steps.items():
            for _ in range(args.steps):
                tick = time.perf_counter()
                {k: float(v) for k, v in step(batches if key[0] == "m" else None).items()}
                times[key].append(time.perf_counter() - tick)

    def ms(key):
        return round(1000 * float(np.median(times[key])), 2)

    result = {
        "benchmark": "jit_speed", "model": "ganem", "dataset": args.dataset, "batch_size": args.batch_size,
        "replicas": strategy.num_replicas_in_sync, "mixed_precision": args.mixed_precision,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"), "rounds": args.rounds,
        "steps_per_round": args.steps,
        "ms_per_m_step": {"no_jit": ms(("m", False)), "jit": ms(("m", True))},
        "ms_per_e_step": {"no_jit": ms(("e", False)), "jit": ms(("e", True))},
        "speedup_m_step": round(ms(("m", False)) / ms(("m", True)), 3),
        "speedup_e_step": round(ms(("e", False)) / ms(("e", True)), 3),
        "warmup_seconds": {f"{p}_{'jit' if j else 'no_jit'}": round(s, 2) for (p, j), s in warmup.items()},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                    "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()]},
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"M-step: {result['ms_per_m_step']['no_jit']} ms without XLA, {result['ms_per_m_step']['jit']} ms with "
          f"(speed-up x{result['speedup_m_step']})")
    print(f"E-step: {result['ms_per_e_step']['no_jit']} ms without XLA, {result['ms_per_e_step']['jit']} ms with "
          f"(speed-up x{result['speedup_e_step']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
