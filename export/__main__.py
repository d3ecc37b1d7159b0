"""Export a finished or checkpointed run: `python -m export --run RUN_DIR --out BASE [--hub]`.

Rebuilds the model from RUN_DIR/model.json, restores the newest checkpoint under
RUN_DIR/checkpoints and writes its E-net classifier and conditional generator in
TF Serving layout under BASE (a new version next to any there). With --hub it also
writes BASE/<model>.tar.gz, the export as a TF Hub-style compressed handle; with
--preset, BASE/<model>_preset/ (config.json, model.weights.h5, metadata.json).
"""

import argparse
import json
import os
import sys
import tarfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class ExportError(Exception):
    pass


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory of a trainer (holds model.json, checkpoints/)")
    parser.add_argument("--out", required=True, help="export base directory (TF Serving model base paths)")
    parser.add_argument("--hub", action="store_true", help="also write OUT/<model>.tar.gz for zoo.load(handle)")
    parser.add_argument("--preset", action="store_true",
                        help="also write OUT/<model>_preset/, a Keras preset (keras-hub layout) for zoo.load")
    return parser.parse_args(argv)


def load_run(run_dir):
    """The model of a run, with the weights of its newest checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.json").exists():
        raise ExportError(f"{run_dir} is not a run directory of the zoo (no model.json)")
    if not (run_dir / "checkpoints" / "checkpoint").exists():
        raise ExportError(f"{run_dir} has no checkpoint under checkpoints/")
    import tensorflow as tf

    from zoo import registry

    model = registry.build(json.loads((run_dir / "model.json").read_text()))
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise ExportError(f"{run_dir} has no checkpoint under checkpoints/")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return model, metrics, latest


def write_hub_tarball(base, model_name):
    """BASE/<model>.tar.gz holding the servables of `model_name`, written then renamed."""
    base = Path(base)
    target = base / f"{model_name}.tar.gz"
    tmp = base / f".{model_name}.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for servable in sorted(base.glob(f"{model_name}_*")):
            if servable.is_dir():
                tar.add(servable, arcname=servable.name)
    os.replace(tmp, target)
    return target


def main(argv=None):
    args = parse_args(argv)
    try:
        model, metrics, checkpoint = load_run(args.run)
    except ExportError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    from export import export_servables

    keep = ("acc", "nmi", "ari", "purity", "many_to_one_acc", "test_error")
    metadata = {"dataset": metrics.get("dataset"), "metrics": {k: metrics[k] for k in keep if k in metrics},
                "checkpoint": Path(checkpoint).name}
    for name, path in export_servables(model, args.out, metadata=metadata).items():
        print(f"{name}: {path}")
    if args.hub:
        print(f"hub tarball: {write_hub_tarball(args.out, model.zoo_name)}")
    if args.preset:
        from zoo.hub import HubError, save_preset

        try:
            print(f"keras preset: {save_preset(model, Path(args.out) / f'{model.zoo_name}_preset', metadata)}")
        except HubError as err:
            print(f"export: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
