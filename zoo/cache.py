"""Where the zoo keeps what it makes once and reuses (reference classifiers, Hub downloads)."""

import os
from pathlib import Path

CACHE_ENV = "ZOO_CACHE_DIR"


def cache_dir():
    """$ZOO_CACHE_DIR, else $XDG_CACHE_HOME/gan-cluster-zoo, else ~/.cache/gan-cluster-zoo."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gan-cluster-zoo"
