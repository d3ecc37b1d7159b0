"""Export of trained zoo models as SavedModels in TensorFlow Serving layout."""

from export.savedmodel import export_servables, write_model_config

__all__ = ["export_servables", "write_model_config"]
