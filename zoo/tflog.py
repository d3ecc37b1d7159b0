"""A quiet TensorFlow start: no C++ INFO/WARNING/ERROR lines on a healthy run.

TensorFlow's native libraries log before absl's logging is initialised, and those lines
(oneDNN and CUDA-driver notices, printed as `I0000 ...`) ignore TF_CPP_MIN_LOG_LEVEL. So
the import runs with the process's stderr sent to a file, and whatever else was written
there meanwhile is passed on. After the import, TF_CPP_MIN_LOG_LEVEL=3 hides the rest:
on a CPU-only machine `failed call to cuInit` (no GPU driver), and Grappler's
`remapper failed: ... Mutation::Apply error` on training steps, where it fuses
Conv2D+BiasAdd+LeakyRelu although LeakyReluGrad still reads the BiasAdd output, gives up
the fusion for that graph and runs it unfused (a TensorFlow bug; the results are right).
`verbose=True` (the trainers' --verbose) shows everything.
"""

import os
import sys
import tempfile

_STARTUP_NOISE = ("I0000 ", "W0000 ", "E0000 ", "WARNING: All log messages before absl::InitializeLog()",
                  "To enable the following instructions:")


def configure(verbose=False):
    """Sets TensorFlow's C++ log level; call before TensorFlow is imported. A level the
    user set in the environment is kept unless `verbose`."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow(verbose=False):
    """Imports TensorFlow (once) without its start-up chatter unless `verbose`; returns it."""
    configure(verbose)
    verbose = verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf

        return tf
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (e.g. captured by a harness)
        import tensorflow as tf

        return tf
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(_STARTUP_NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    return tf
