"""Test session set-up: the CPU is split into two logical devices before TensorFlow
initialises, so distribution tests can run a two-replica MirroredStrategy."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def _split_cpu():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # already initialised by an earlier import: tests needing 2 replicas skip
        pass


_split_cpu()


@pytest.fixture(scope="session")
def two_cpu_strategy():
    import tensorflow as tf

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("TensorFlow initialised before the CPU could be split")
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session", autouse=True)
def private_zoo_cache(tmp_path_factory):
    """Tests never read or fill the user's cache (reference classifiers, Hub downloads);
    trainers started as subprocesses inherit the setting."""
    os.environ["ZOO_CACHE_DIR"] = str(tmp_path_factory.mktemp("zoo-cache"))
