"""Backbones chosen by input shape, shared by every model in the zoo.

Three builders cover all four papers:

* `build_generator`: (noise, condition) -> sample. The condition is a one-hot cluster
  code for conditional models; models with an unconditional generator pass a
  zero-width condition.
* `build_trunk`: sample -> feature vector (the shared body of discriminators,
  critics, E-nets and encoders).
* `build_classifier`: trunk + optional bottleneck ("embedding") + linear head; its
  outputs are `(logits, embedding)`.

Architectures (GAN-EM / ClusterGAN on MNIST, as in their papers):

* conv, 28x28 and 32x32: G = FC1024-BN-ReLU, FC (H/4)(W/4)128-BN-ReLU,
  ConvT64 4x4/2-BN-ReLU, ConvT C 4x4/2 sigmoid. Trunk = Conv64, Conv128 (4x4/2,
  LeakyReLU 0.2), FC1024-LeakyReLU.
* conv, 64x64 (CelebA): one more up/down-sampling stage (256, 128, 64 channels).
* mlp: flat vectors, and images whose size fits no conv stack (8x8 `digits`).
  G = 2 x (FC256-BN-ReLU), linear (vectors) or sigmoid (images) output.

Batch norm in the generator is synchronised across replicas, so that a step on
R replicas computes the same statistics as one step on the whole global batch.
"""

import math

import keras
from keras import layers

ARCHITECTURES = ("auto", "conv", "mlp")
# Outputs (samples, logits, embeddings) stay float32 under a mixed-precision policy, so
# losses and exports see float32 whatever the layers compute in (Keras' own advice).
OUTPUT_DTYPE = "float32"


def choose_architecture(input_shape, architecture="auto"):
    """Returns "conv" or "mlp" for data of `input_shape` (without the batch axis)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    convolvable = (
        len(input_shape) == 3
        and input_shape[0] == input_shape[1]
        and input_shape[0] >= 16
        and input_shape[0] % 4 == 0
        and input_shape[2] in (1, 3)
    )
    if architecture == "auto":
        return "conv" if convolvable else "mlp"
    if architecture == "conv" and not convolvable:
        raise ValueError(
            f"a conv architecture needs square images of side >= 16 divisible by 4 with 1 or 3 "
            f"channels, got input shape {tuple(input_shape)}"
        )
    return architecture


def _conv_channels(side):
    """Channels of the upsampling stages, widest first; side / 2**len is the start size."""
    return (128, 64) if side <= 32 else (256, 128, 64)


def _sync_batch_norm(name):
    return layers.BatchNormalization(momentum=0.9, synchronized=True, name=name)


def build_generator(output_shape, latent_dim, condition_dim, architecture="auto", name="generator"):
    """(noise [latent_dim], condition [condition_dim]) -> sample of `output_shape`."""
    architecture = choose_architecture(output_shape, architecture)
    noise = keras.Input((latent_dim,), name="noise")
    condition = keras.Input((condition_dim,), name="condition")
    h = layers.Concatenate(name="latent")([noise, condition]) if condition_dim else noise
    is_image = len(output_shape) == 3

    if architecture == "conv":
        side, _, out_channels = output_shape
        channels = _conv_channels(side)
        start = side // 2 ** len(channels)
        h = layers.Dense(1024, use_bias=False, name="fc1")(h)
        h = layers.ReLU()(_sync_batch_norm("fc1_bn")(h))
        h = layers.Dense(start * start * channels[0], use_bias=False, name="fc2")(h)
        h = layers.ReLU()(_sync_batch_norm("fc2_bn")(h))
        h = layers.Reshape((start, start, channels[0]))(h)
        for i, width in enumerate(channels[1:]):
            h = layers.Conv2DTranspose(width, 4, 2, "same", use_bias=False, name=f"up{i}")(h)
            h = layers.ReLU()(_sync_batch_norm(f"up{i}_bn")(h))
        out = layers.Conv2DTranspose(out_channels, 4, 2, "same", activation="sigmoid", name="out",
                                     dtype=OUTPUT_DTYPE)(h)
    else:
        for i in range(2):
            h = layers.Dense(256, use_bias=False, name=f"fc{i + 1}")(h)
            h = layers.ReLU()(_sync_batch_norm(f"fc{i + 1}_bn")(h))
        size = math.prod(output_shape)
        out = layers.Dense(size, activation="sigmoid" if is_image else None, name="out", dtype=OUTPUT_DTYPE)(h)
        out = layers.Reshape(tuple(output_shape), dtype=OUTPUT_DTYPE)(out)
    return keras.Model([noise, condition], out, name=name)


def build_trunk(input_shape, architecture="auto", name="trunk"):
    """sample -> features (1024-wide for conv, 256-wide for mlp). No batch norm: the
    trunk is also used by critics with a gradient penalty, where batch norm is wrong."""
    architecture = choose_architecture(input_shape, architecture)
    x = keras.Input(tuple(input_shape), name="images")
    if architecture == "conv":
        h = x
        for i, width in enumerate(reversed(_conv_channels(input_shape[0]))):
            h = layers.Conv2D(width, 4, 2, "same", name=f"conv{i}")(h)
            h = layers.LeakyReLU(0.2)(h)
        h = layers.Flatten()(h)
        h = layers.LeakyReLU(0.2)(layers.Dense(1024, name="fc")(h))
    else:
        h = layers.Flatten()(x) if len(input_shape) > 1 else x
        for i in range(2):
            h = layers.LeakyReLU(0.2)(layers.Dense(256, name=f"fc{i + 1}")(h))
    return keras.Model(x, h, name=name)


def build_classifier(input_shape, num_outputs, embedding_dim=None, architecture="auto", name="classifier"):
    """sample -> (logits [num_outputs], embedding). With `embedding_dim` an extra linear
    layer of that width sits before the head and its activations are the embedding
    (GAN-EM's dimensionality reduction); otherwise the embedding is the trunk output."""
    trunk = build_trunk(input_shape, architecture, name=f"{name}_trunk")
    x = keras.Input(tuple(input_shape), name="images")
    features = trunk(x)
    if embedding_dim:
        embedding = layers.Dense(embedding_dim, name="embedding", dtype=OUTPUT_DTYPE)(features)
        head_input = layers.LeakyReLU(0.2)(embedding)
    else:
        embedding = layers.Activation("linear", name="features", dtype=OUTPUT_DTYPE)(features)
        head_input = features
    logits = layers.Dense(num_outputs, name="logits", dtype=OUTPUT_DTYPE)(head_input)
    return keras.Model(x, [logits, embedding], name=name)
