"""Model classes by zoo name, and rebuilding a model from its saved description."""

import importlib

# zoo name -> "module:Class"; imported on demand so `import zoo` stays light.
MODELS = {"ganem": "zoo.ganem:GANEM", "clustergan": "zoo.clustergan:ClusterGAN", "gmgan": "zoo.gmgan:GMGAN",
          "kmgan": "zoo.kmgan:KMGAN"}


def model_class(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def describe(model):
    """What `build` needs to make the same model again (written as RUN_DIR/model.json)."""
    return {"model": model.zoo_name, "config": model.get_config()}


def build(description):
    return model_class(description["model"]).from_config(description["config"])
