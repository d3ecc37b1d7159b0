"""GAN-EM under MirroredStrategy on two logical CPUs (conftest splits the CPU).

(a) it trains, (b) the replicas draw different noise; that the losses and the updated weights
equal those of one replica running the same global batch is checked for every model in
tests/test_every_model.py.
"""

import numpy as np
import tensorflow as tf

from trainers import common
from zoo.ganem import GANEM

GLOBAL_BATCH = 8


def build(strategy):
    with strategy.scope():
        model = GANEM((8, 8, 1), 3, latent_dim=5, e_batch_size=GLOBAL_BATCH, seed=4)
        # Plain SGD: its update is proportional to the gradient, so a gradient summed
        # over replicas without scaling would show (Adam's first step would hide it).
        model.compile(g_optimizer=tf.keras.optimizers.SGD(0.1), d_optimizer=tf.keras.optimizers.SGD(0.1),
                      e_optimizer=tf.keras.optimizers.SGD(0.1))
    return model


def real_batches(strategy):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(GLOBAL_BATCH * 4, 8, 8, 1)).astype(np.float32)
    w = rng.dirichlet(np.ones(3), size=len(x)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, w)).batch(GLOBAL_BATCH)
    return iter(strategy.experimental_distribute_dataset(ds))


def test_replicas_draw_different_noise_that_tiles_the_global_draw(two_cpu_strategy):
    model = build(two_cpu_strategy)
    seed = model.step_seed(3, 1)

    @tf.function
    def draw():
        return two_cpu_strategy.run(lambda: model.draw_noise(GLOBAL_BATCH // 2, seed))

    per_replica = two_cpu_strategy.experimental_local_results(draw())
    first, second = (t.numpy() for t in per_replica)
    assert not np.allclose(first, second)
    single = build(tf.distribute.get_strategy()).draw_noise(GLOBAL_BATCH, seed).numpy()
    np.testing.assert_allclose(np.concatenate([first, second]), single, rtol=1e-6)


def test_mirrored_training_moves_the_weights_and_stays_finite(two_cpu_strategy):
    model = build(two_cpu_strategy)
    before = [w.copy() for w in model.get_weights()]
    m_step = common.replicated_step(two_cpu_strategy, model.m_step)
    batches = real_batches(two_cpu_strategy)
    for _ in range(4):
        values = m_step(batches)
    assert all(np.isfinite(float(v)) for v in values.values())
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    assert int(model.d_optimizer.iterations.numpy()) == 4


def test_one_replica_reads_whole_batches_and_two_replicas_split_them(two_cpu_strategy):
    # One replica skips the distributed iterator (its prefetch to the device slows a CPU step).
    x = np.arange(GLOBAL_BATCH * 4, dtype=np.float32).reshape(-1, 1)
    one = tf.distribute.MirroredStrategy(["/cpu:0"])
    whole = next(common.distributed_batches(one, (x,), GLOBAL_BATCH, seed=0))[0]
    assert isinstance(whole, tf.Tensor) and whole.shape == (GLOBAL_BATCH, 1)
    split = next(common.distributed_batches(two_cpu_strategy, (x,), GLOBAL_BATCH, seed=0))[0]
    halves = two_cpu_strategy.experimental_local_results(split)
    assert [h.shape[0] for h in halves] == [GLOBAL_BATCH // 2] * 2
    np.testing.assert_array_equal(np.sort(np.concatenate(halves), 0), np.sort(whole.numpy(), 0))


def test_input_pipelines_never_autotune():
    # Deleting an autotuned iterator waits for tf.data's tuning thread (up to a minute), and
    # every EM iteration replaces its iterators.
    x = np.zeros((8, 4, 4, 1), np.uint8)
    assert common.input_pipeline((x, np.arange(8)), 4, seed=0).options().autotune.enabled is False
    assert common.pipeline_options().deterministic is True
