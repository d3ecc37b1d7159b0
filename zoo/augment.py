"""Random small shifts and rotations of image batches, drawn statelessly per replica.

Used to augment what a classifier trains on (GAN-EM's E-net): with few labelled
examples, a network that sees each one in many small poses generalises much better
(on mnist5k, GAN-EM's E-net trained on the labelled examples alone: 8.4 % test error
without, 4.4 % with, for 1,000 labels; 19.9 % and 10.7 % for 100; 3 seeds,
benchmarks/supervised_enet.py [--augment]).
"""

import math

import tensorflow as tf

from zoo.base import replica_slice

MAX_SHIFT = 0.1  # of the image side
MAX_DEGREES = 10.0


def check_images(shape):
    """Raises ValueError unless samples of `shape` (no batch axis) are images (H, W, C)."""
    if len(shape) != 3:
        raise ValueError(f"augmentation needs image data of shape (height, width, channels), got samples of shape "
                         f"{tuple(shape)}")


def random_pose(images, seed, max_shift=MAX_SHIFT, max_degrees=MAX_DEGREES):
    """`images` [B, H, W, C], each moved by up to `max_shift` x side and turned by up to
    `max_degrees` about its centre (bilinear, zero fill), with stateless randomness from
    `seed` ([2] int): the same seed gives the same poses, whatever the replica count."""
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]

    def draw(n, s):
        return tf.random.stateless_uniform((n, 3), seed=s, minval=-1.0, maxval=1.0)

    u = replica_slice(draw, batch, seed)
    angle = u[:, 0] * (max_degrees * math.pi / 180.0)
    shift_x, shift_y = u[:, 1] * (max_shift * width), u[:, 2] * (max_shift * height)
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    # Output pixel (x, y) reads input pixel R (x - centre) + centre - shift.
    transforms = tf.stack([
        cos, -sin, centre_x - cos * centre_x + sin * centre_y - shift_x,
        sin, cos, centre_y - sin * centre_x - cos * centre_y - shift_y,
        tf.zeros_like(cos), tf.zeros_like(cos),
    ], axis=1)
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=tf.constant([height, width]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.cast(moved, images.dtype)
