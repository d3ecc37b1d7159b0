"""A Keras 3 zoo of GAN-based clustering models."""

__version__ = "0.1.0"


def load(handle, model=None, allow_unpinned=False):
    """A trained model from a directory, file://, https://...tar.gz#sha256=... or preset name
    (see zoo.hub)."""
    from zoo.hub import load as hub_load

    return hub_load(handle, model=model, allow_unpinned=allow_unpinned)
