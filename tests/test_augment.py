"""Random poses of image batches (the E-net's optional augmentation)."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.augment import check_images, random_pose
from zoo.ganem import GANEM


def digit_like_batch():
    images = np.zeros((6, 16, 16, 1), np.float32)
    images[:, 5:11, 7:9] = 1.0  # a bar in the middle, away from the borders
    return tf.constant(images)


def test_same_seed_same_poses_other_seed_other_poses():
    images = digit_like_batch()
    seed = tf.constant([3, 4], tf.int64)
    first, again = random_pose(images, seed).numpy(), random_pose(images, seed).numpy()
    other = random_pose(images, tf.constant([3, 5], tf.int64)).numpy()
    assert first.shape == images.shape and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.1
    # Each example gets its own pose, and the digit moves but stays whole (ink kept).
    assert np.abs(first[0] - first[1]).max() > 0.1
    np.testing.assert_allclose(first.sum(axis=(1, 2, 3)), images.numpy().sum(axis=(1, 2, 3)), rtol=0.05)


def test_zero_shift_and_rotation_is_the_identity():
    images = tf.random.stateless_uniform((4, 12, 12, 3), seed=[0, 1])
    same = random_pose(images, tf.constant([0, 1], tf.int64), max_shift=0.0, max_degrees=0.0)
    np.testing.assert_allclose(same.numpy(), images.numpy(), atol=1e-6)


def test_shift_stays_within_its_bound():
    images = np.zeros((64, 20, 20, 1), np.float32)
    images[:, 10, 10] = 1.0  # one lit pixel at the centre
    moved = random_pose(tf.constant(images), tf.constant([7, 7], tf.int64), max_shift=0.1, max_degrees=0.0).numpy()
    rows, cols = np.nonzero(moved[..., 0].max(axis=0) > 0)
    assert np.abs(rows - 10).max() <= 2 and np.abs(cols - 10).max() <= 2  # 10 % of 20 pixels
    assert np.abs(rows - 10).max() >= 1  # and it does move


def test_vectors_cannot_be_augmented():
    check_images((28, 28, 1))
    with pytest.raises(ValueError, match="image data"):
        check_images((100,))
    with pytest.raises(ValueError, match="image data"):
        GANEM((100,), 3, augment="labelled")
    with pytest.raises(ValueError, match="augment must be one of"):
        GANEM((8, 8, 1), 3, augment="flip")


@pytest.mark.parametrize("augment", ["labelled", "all"])
def test_augmented_e_step_trains_on_the_labelled_batch(augment):
    model = GANEM((8, 8, 1), 3, latent_dim=5, e_batch_size=8, augment=augment, seed=1)
    model.compile()
    assert GANEM.from_config(model.get_config()).augment == augment
    x_l = tf.random.stateless_uniform((6, 8, 8, 1), seed=[1, 2])
    y_l = tf.constant([0, 1, 2, 0, 1, 2])
    before = [v.numpy().copy() for v in model.enet.trainable_variables]
    out = tf.function(model.e_step)((x_l, y_l))
    assert np.isfinite(float(out["e_loss_labelled"]))
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.enet.trainable_variables))


def test_two_replicas_pose_their_halves_as_one_replica_poses_the_whole(two_cpu_strategy):
    images = tf.random.stateless_uniform((8, 12, 12, 1), seed=[5, 6])
    seed = tf.constant([2, 9], tf.int64)
    halves = two_cpu_strategy.experimental_distribute_values_from_function(
        lambda context: images[context.replica_id_in_sync_group * 4:(context.replica_id_in_sync_group + 1) * 4])

    @tf.function
    def pose():
        return two_cpu_strategy.run(lambda x: random_pose(x, seed), args=(halves,))

    posed = np.concatenate([t.numpy() for t in two_cpu_strategy.experimental_local_results(pose())])
    np.testing.assert_allclose(posed, random_pose(images, seed).numpy(), atol=1e-5)
