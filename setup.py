"""Installs the GAN clustering zoo: models (zoo), trainers, export and serving."""
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(
    r'__version__ = "([^"]+)"', Path(__file__).with_name("zoo").joinpath("__init__.py").read_text()
).group(1)

setup(
    name="gan-cluster-zoo",
    version=VERSION,
    description="Keras 3 model zoo of GAN-based clustering: GAN-EM, ClusterGAN, GM-GAN, KM-GAN",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    # zoo.hub unpacks tarballs itself (no tarfile extraction filter), so any 3.10 will do.
    python_requires=">=3.10",
    packages=find_packages(include=["zoo", "zoo.*", "trainers", "trainers.*", "export", "export.*",
                                    "serving", "serving.*"]),
    install_requires=[
        # `tensorflow`, never `tensorflow-cpu`: tensorflow-serving-api depends on it.
        "tensorflow>=2.16",
        "keras>=3.11.3",  # earlier releases let crafted files bypass safe_mode when loading
        "tensorflow-datasets",
        "tensorflow-serving-api",
        "numpy",
        "scikit-learn",
        "scipy",
        "mlxtend",
        "matplotlib",
        "umap-learn",  # the UMAP + GMM start of GAN-EM and the baseline beside every model
        "tensorboard",  # tf.summary needs it; tensorflow 2.21 no longer pulls it in
        "tqdm",
        "grpcio",  # serving.server / serving.client (also pulled in by tensorflow-serving-api)
        "Pillow",  # image folders, PNG input of serving.client (also pulled in by matplotlib)
    ],
    # ruff: the lint CI runs (ruff.toml), pinned to a minor release, since new ones add rules.
    extras_require={"test": ["pytest", "ruff~=0.17.0"]},
    entry_points={
        "console_scripts": [
            "zoo-ganem=trainers.ganem:cli",
            "zoo-clustergan=trainers.clustergan:cli",
            "zoo-gmgan=trainers.gmgan:cli",
            "zoo-kmgan=trainers.kmgan:cli",
            "zoo-export=export.__main__:main",
        ]
    },
)
