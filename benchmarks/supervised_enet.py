#!/usr/bin/env python
"""The semi-supervised rows' lower bar: GAN-EM's E-net trained on the labelled examples alone.

Same network (`zoo.networks.build_classifier`, picked by input shape), optimizer (Adam 2e-4,
beta1 0.5) and batch (64) as GAN-EM's E-step, the same class-balanced labelled subset per seed
(`zoo.data.labeled_subset`), no generated data and no unlabelled data; the error is measured
on the examples not used as labels, as GAN-EM's `test_error` is. Whatever GAN-EM gains over
this comes from the unlabelled data. `--augment` trains on random poses of the labelled
examples (`zoo.augment`, as GAN-EM's `--augment labelled`).

    python benchmarks/supervised_enet.py [--dataset mnist5k] [--labels 100 1000] [--seeds 0 1 2] [--augment]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def error_after_training(dataset, labels, seed, steps, augment=False, batch=64):
    import keras
    import tensorflow as tf

    from zoo.augment import random_pose
    from zoo.data import labeled_subset
    from zoo.networks import build_classifier
    from zoo.optimizers import Adam

    x, y = dataset.x, dataset.y
    labelled = labeled_subset(y, labels, dataset.num_classes, seed)
    unlabelled = np.setdiff1d(np.arange(len(x)), labelled)
    keras.utils.set_random_seed(seed)
    net = build_classifier(dataset.input_shape, dataset.num_classes, None, "auto", name="enet")
    optimizer = Adam(2e-4, beta_1=0.5)
    x_l, y_l = tf.constant(x[labelled]), tf.constant(y[labelled])

    @tf.function
    def step(index, counter):
        images = tf.gather(x_l, index)
        if augment:
            images = random_pose(images, tf.stack([tf.constant(seed, tf.int64), counter]))
        with tf.GradientTape() as tape:
            logits, _ = net(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.gather(y_l, index), logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))

    rng = np.random.default_rng(seed)
    for counter in range(steps):
        step(rng.choice(labels, min(batch, labels), replace=False), tf.constant(counter, tf.int64))
    predictions = np.concatenate([net(x[unlabelled][i:i + 500])[0].numpy().argmax(1)
                                  for i in range(0, len(unlabelled), 500)])
    return float(np.mean(predictions != y[unlabelled]))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/supervised_enet.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1200, help="E-net updates (GAN-EM's default run makes 1,200)")
    parser.add_argument("--augment", action="store_true", help="train on random poses of the labelled examples")
    parser.add_argument("--out", default=None,
                        help="JSON (default benchmarks/results/supervised_enet_<dataset>[_augment].json)")
    args = parser.parse_args(argv)

    from zoo.data import load_dataset

    dataset = load_dataset(args.dataset)
    rows = []
    for labels in args.labels:
        tick = time.time()
        errors = [error_after_training(dataset, labels, seed, args.steps, args.augment) for seed in args.seeds]
        rows.append({"labels": labels, "test_error_mean": float(np.mean(errors)),
                     "test_error_std": float(np.std(errors)), "per_seed": dict(zip(map(str, args.seeds), errors)),
                     "seconds": round(time.time() - tick, 1)})
        print(f"{labels} labels: test error {100 * np.mean(errors):.2f} ± {100 * np.std(errors):.2f} % "
              f"({len(errors)} seeds)", flush=True)
    suffix = "_augment" if args.augment else ""
    results = REPO / "benchmarks" / "results"
    out = Path(args.out) if args.out else results / f"supervised_enet_{args.dataset}{suffix}.json"
    out.write_text(json.dumps({"benchmark": "supervised_enet", "dataset": args.dataset, "steps": args.steps,
                               "augment": args.augment,
                               "seeds": args.seeds, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
