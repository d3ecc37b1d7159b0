"""Export of trained zoo models as SavedModels in TensorFlow Serving layout."""

__all__ = ["export_servables", "write_model_config"]


def __getattr__(name):
    # Imported on first use, so that `python -m export.assign` can import TensorFlow quietly.
    if name in __all__:
        from export import savedmodel

        return getattr(savedmodel, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
