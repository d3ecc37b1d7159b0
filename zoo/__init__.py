"""A Keras 3 zoo of GAN-based clustering models."""

__version__ = "0.1.0"
