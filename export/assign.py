"""Assign images to the clusters of a trained model, without a server:
`python -m export.assign --run RUN_DIR --dataset PATH [--out assignments.csv]`.

The model is a finished or checkpointed run (its export/ if there is one, else its newest
checkpoint) or, with --model, an export base, a .tar.gz of one or a Keras preset (anything
zoo.load takes). The data are any --dataset the trainers take, with the shape the model
was trained on. Writes the CSV every run writes (path or index, cluster, confidence, true
label when known) and, with --sheets DIR, a contact sheet per cluster.
"""

import argparse
import sys
from pathlib import Path


class AssignError(Exception):
    """Bad input: one line on stderr, exit code 2."""


def parse_args(argv):
    from trainers.config import HelpFormatter

    parser = argparse.ArgumentParser(prog="python -m export.assign", description=__doc__, formatter_class=HelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory of a trainer (runs/...)")
    source.add_argument("--model", help="an export base directory (holds <model>_enet/), a .tar.gz of one, "
                                        "or a Keras preset directory")
    parser.add_argument("--dataset", required=True,
                        help="images to assign: a folder of images (or of class folders), a .npz or an IDX file")
    parser.add_argument("--labels-file", default=None,
                        help="true labels of --dataset (IDX, .npy, .npz or one label per line), written as the "
                             "label column")
    parser.add_argument("--out", default="assignments.csv", help="the CSV to write (replaced if it exists)")
    parser.add_argument("--sheets", default=None, metavar="DIR",
                        help="also write DIR/cluster_NN.png, the most confident members of each cluster")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--memory-budget", type=int, default=2048, metavar="MIB",
                        help="MiB of images to hold in memory; a larger folder or IDX file is read from disk")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise AssignError(f"--batch-size must be positive (got {args.batch_size})")
    if args.memory_budget < 0:
        raise AssignError(f"--memory-budget must be >= 0 (got {args.memory_budget})")
    return args


def load_model(args):
    """An object with cluster_probs(x) and data_shape."""
    import zoo
    from zoo.hub import HubError

    if args.model:
        try:
            return zoo.load(args.model)
        except HubError as err:
            raise AssignError(str(err)) from None
    run = Path(args.run)
    if not run.is_dir():
        raise AssignError(f"--run {run}: no such directory")
    export = run / "export"
    if export.is_dir() and any(export.glob("*_enet")):
        try:
            return zoo.load(str(export))
        except HubError as err:
            raise AssignError(str(err)) from None
    from export.__main__ import ExportError, load_run

    try:
        return load_run(run)[0]
    except ExportError as err:
        raise AssignError(str(err)) from None


def main(argv=None):
    from trainers.common import predict_in_batches
    from trainers.run import write_assignments
    from zoo import data as zoo_data
    from zoo import tflog

    args = parse_args(argv)
    tflog.configure(args.verbose)
    dataset = zoo_data.load_dataset(args.dataset, labels_file=args.labels_file, memory_budget=args.memory_budget << 20)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise AssignError(f"--out {out}: directory {out.parent} does not exist")
    tf = tflog.import_tensorflow(args.verbose)
    model = load_model(args)
    expected = tuple(int(d) for d in model.data_shape)
    if tuple(dataset.input_shape) != expected:
        raise AssignError(f"{args.dataset} holds samples of shape {tuple(dataset.input_shape)} but the model was "
                          f"trained on {expected}")
    probs = predict_in_batches(tf.function(model.cluster_probs, reduce_retracing=True)
                               if hasattr(model, "trainable_variables") else model.cluster_probs,
                               dataset.data, batch_size=args.batch_size)
    predictions = probs.argmax(1)
    path = write_assignments(out, dataset, probs, predictions, sheets_dir=args.sheets)
    sizes = [int((predictions == c).sum()) for c in range(probs.shape[1])]
    print(f"assigned {len(dataset)} samples of {dataset.name} to {probs.shape[1]} clusters, sizes {sizes}: {path}")
    return 0


def cli(argv=None):
    from zoo.data import DataError

    try:
        return main(argv)
    except (AssignError, DataError) as err:
        print(f"export.assign: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
