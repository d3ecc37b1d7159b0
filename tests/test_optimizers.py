"""zoo.optimizers.Adam: Keras' Adam update through TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.optimizers import Adam

SHAPES = [(40, 24), (24,), (3, 3, 2, 4)]


def gradients(seed, steps=4):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=shape).astype(np.float32) for shape in SHAPES] for _ in range(steps)]


def train(optimizer_class, strategy=None, jit=False, learning_rate=1e-2, **kwargs):
    """Variables after a few updates with fixed gradients; also the distance they moved."""
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    with strategy.scope():
        variables = [keras.Variable(value) for value in start]
        optimizer = optimizer_class(learning_rate, beta_1=0.5, **kwargs)
        optimizer.build(variables)
    grads = tf.Variable(tf.zeros([sum(int(np.prod(s)) for s in SHAPES)]))

    @tf.function(jit_compile=jit)
    def apply():
        flat = tf.split(tf.convert_to_tensor(grads), [int(np.prod(s)) for s in SHAPES])
        optimizer.apply_gradients(zip([tf.reshape(g, s) for g, s in zip(flat, SHAPES)], variables))

    @tf.function
    def step():
        strategy.run(apply)

    for step_grads in gradients(1):
        grads.assign(np.concatenate([g.ravel() for g in step_grads]))
        step()
    end = [v.numpy() for v in variables]
    return end, max(np.abs(e - s).max() for e, s in zip(end, start)), optimizer


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_same_updates_as_keras_adam(strategy):
    make = (lambda: None) if strategy == "default" else (lambda: tf.distribute.MirroredStrategy(["/cpu:0"]))
    expected, moved, _ = train(keras.optimizers.Adam, make())
    got, _, optimizer = train(Adam, make())
    assert moved > 1e-2  # the updates did something
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)  # float32 rounding of values near 1
    assert int(optimizer.iterations.numpy()) == 4


def test_learning_rate_schedules_and_xla_take_the_same_path():
    schedule = lambda: keras.optimizers.schedules.CosineDecay(1e-2, 4, alpha=0.1)  # noqa: E731
    expected, _, _ = train(keras.optimizers.Adam, learning_rate=schedule())
    got, _, _ = train(Adam, learning_rate=schedule(), jit=True)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_amsgrad_falls_back_to_keras_and_config_round_trips():
    expected, _, _ = train(keras.optimizers.Adam, amsgrad=True)
    got, _, optimizer = train(Adam, amsgrad=True)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    again = Adam.from_config(optimizer.get_config())
    assert again.get_config() == optimizer.get_config() and isinstance(again, Adam)


def test_checkpoints_of_keras_adam_restore_into_it(tmp_path):
    _, _, keras_adam = train(keras.optimizers.Adam)
    path = tf.train.Checkpoint(optimizer=keras_adam).save(str(tmp_path / "ckpt"))
    _, _, fused = train(Adam, learning_rate=5e-3)
    tf.train.Checkpoint(optimizer=fused).restore(path).assert_existing_objects_matched()
    for a, b in zip(keras_adam.variables, fused.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
