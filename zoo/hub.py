"""Hub-style loading: `zoo.load(handle)` gives back a model with `cluster_probs`, `embed`
and `generate`, wherever it comes from.

A handle is

* a local directory: an export base (`<model>_enet/<version>/`, `<model>_generator/<version>/`,
  as `python -m export` and the trainers write), or a Keras preset in the keras-hub layout
  (`config.json`, `model.weights.h5`, `metadata.json`; see `save_preset`);
* `file://PATH`, PATH being such a directory or a `.tar.gz` of one;
* `http(s)://.../NAME.tar.gz`, a TF Hub-style compressed export (`python -m export --hub`),
  downloaded once into the cache. `#sha256=HEX` at the end of the handle is checked;
* a preset name from `PRESETS`.

Downloads go to `$ZOO_CACHE_DIR/hub/` (see `zoo.cache`): into a temporary file, then
checked and unpacked into a temporary directory, then renamed into place, so an
interrupted download never leaves an entry that a later `load` would take.
"""

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from zoo.cache import cache_dir

# name -> {"url": ..., "sha256": ...}. The project hosts no weights yet; `register_preset`
# adds entries (an organisation's own model store, or a test's local server).
PRESETS = {}


class HubError(ValueError):
    """A handle that cannot be loaded; the message names the handle and the reason."""


def register_preset(name, url, sha256=None):
    PRESETS[name] = {"url": url, "sha256": sha256}


# -- what load() gives back ---------------------------------------------------------------------
class SavedModelClusterer:
    """The zoo's surface over exported SavedModels: cluster_probs, embed, generate, sample."""

    def __init__(self, enet_dir, generator_dir):
        import tensorflow as tf

        self.enet = tf.saved_model.load(str(enet_dir))
        self.generator = tf.saved_model.load(str(generator_dir))
        info = json.loads((Path(enet_dir) / "assets.extra" / "zoo.json").read_text())
        self.info = info
        self.zoo_name, self.num_clusters = info["model"], int(info["clusters"])
        self.data_shape, self.latent_dim = tuple(info["input_shape"]), int(info["latent_dim"])

    def cluster_probs(self, x):
        return self._enet(x)["probabilities"]

    def predict_clusters(self, x):
        return self._enet(x)["cluster"]

    def embed(self, x):
        return self._enet(x)["embedding"]

    def generate(self, z, c):
        import tensorflow as tf

        return self.generator.signatures["serving_default"](
            noise=tf.convert_to_tensor(z, tf.float32), cluster=tf.cast(c, tf.int64))["images"]

    def sample(self, cluster, seed=0, **extra):
        """Samples of `cluster` ids with the noise drawn inside the SavedModel from `seed`."""
        import tensorflow as tf

        inputs = {k: tf.constant(v, tf.float32) for k, v in extra.items()}
        return self.generator.signatures["sample"](cluster=tf.cast(cluster, tf.int64),
                                                   seed=tf.constant(seed, tf.int64), **inputs)["images"]

    def _enet(self, x):
        import tensorflow as tf

        return self.enet.signatures["serving_default"](images=tf.convert_to_tensor(x, tf.float32))


# -- Keras presets (keras-hub layout) --------------------------------------------------------
def save_preset(model, directory, metadata=None):
    """Writes `model` as a Keras preset: config.json (what registry.build needs),
    model.weights.h5 and metadata.json; written aside, then renamed into place."""
    from zoo import __version__, registry

    directory = Path(directory)
    if directory.exists():
        raise HubError(f"{directory} exists: a preset is never overwritten")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        (staging / "config.json").write_text(json.dumps(registry.describe(model), indent=2, default=str) + "\n")
        model.save_weights(str(staging / "model.weights.h5"))
        (staging / "metadata.json").write_text(json.dumps(
            {"keras_version": __import__("keras").__version__, "zoo_version": __version__, **(metadata or {})},
            indent=2, default=str) + "\n")
        os.rename(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _load_preset(directory):
    from zoo import registry

    model = registry.build(json.loads((directory / "config.json").read_text()))
    model(__import__("numpy").zeros((1, *model.data_shape), "float32"))  # build before loading weights
    model.load_weights(str(directory / "model.weights.h5"))
    return model


# -- handles ---------------------------------------------------------------------------------
def load(handle, model=None):
    """The model behind `handle` (see the module docstring). `model` picks one zoo model
    when an export base holds several (e.g. "ganem")."""
    handle = str(handle)
    if handle in PRESETS:
        preset = PRESETS[handle]
        url = preset["url"] + (f"#sha256={preset['sha256']}" if preset.get("sha256") else "")
        return load(url, model)
    parsed = urllib.parse.urlparse(handle)
    if parsed.scheme in ("http", "https"):
        return _load_directory(_download(handle), model, handle)
    if parsed.scheme == "file":
        handle = urllib.parse.unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise HubError(f"cannot load {handle!r}: unknown scheme {parsed.scheme!r} (use a directory, file://, "
                       f"http(s)://...tar.gz or a preset name: {', '.join(sorted(PRESETS)) or 'none registered'})")
    path = Path(handle)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return _load_directory(_unpack_cached(path, hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]),
                               model, handle)
    if not path.exists():
        raise HubError(f"cannot load {handle!r}: no such directory or file, and no preset of that name "
                       f"(presets: {', '.join(sorted(PRESETS)) or 'none registered'})")
    return _load_directory(path, model, handle)


def _load_directory(path, model, handle):
    path = Path(path)
    if (path / "config.json").exists() and (path / "model.weights.h5").exists():
        return _load_preset(path)
    enets = sorted(p.name[: -len("_enet")] for p in path.glob("*_enet") if p.is_dir())
    if model is not None:
        enets = [m for m in enets if m == model]
    if not enets:
        raise HubError(f"{handle!r} holds no zoo export (<model>_enet/<version>/) and no Keras preset "
                       f"(config.json + model.weights.h5)" + (f" for model {model!r}" if model else ""))
    if len(enets) > 1:
        raise HubError(f"{handle!r} holds several models ({', '.join(enets)}): pass model=")
    name = enets[0]
    return SavedModelClusterer(_newest(path / f"{name}_enet", handle), _newest(path / f"{name}_generator", handle))


def _newest(servable_dir, handle):
    versions = [p for p in servable_dir.glob("*") if p.name.isdigit() and (p / "saved_model.pb").exists()]
    if not versions:
        raise HubError(f"{handle!r}: {servable_dir.name} has no complete version")
    return max(versions, key=lambda p: int(p.name))


def _download(handle):
    """The unpacked directory of an http(s) tarball, from the cache or downloaded into it."""
    url, _, fragment = handle.partition("#")
    expected = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else None
    key = hashlib.sha256(url.encode()).hexdigest()[:24] + (f"-{expected[:16]}" if expected else "")
    target = cache_dir() / "hub" / key
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".download-", suffix=".tar.gz")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            size = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if size is not None and received != int(size):
            raise HubError(f"download of {url} was cut short ({received} of {size} bytes)")
        if expected and digest.hexdigest() != expected:
            raise HubError(f"checksum mismatch for {url}: expected sha256 {expected}, got {digest.hexdigest()}")
        return _unpack_cached(Path(tmp), key)
    except (OSError, urllib.error.URLError) as err:
        raise HubError(f"cannot download {url}: {getattr(err, 'reason', err)}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _unpack_cached(tarball, key):
    target = cache_dir() / "hub" / key
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                tar.extractall(staging, filter="data")  # refuses absolute paths and links out of the folder
        except (tarfile.TarError, EOFError, OSError) as err:
            raise HubError(f"{tarball} is not a readable .tar.gz: {err}") from None
        os.rename(staging, target)
    except OSError:
        if not target.exists():  # a concurrent load may have won the race: that entry is as good
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
