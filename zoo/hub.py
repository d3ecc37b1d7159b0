"""Hub-style loading: `zoo.load(handle)` gives back a model with `classify`, `cluster_probs`,
`embed`, `generate` and `sample`, wherever it comes from: the vocabulary of the zoo's Keras
models and of the serving client.

A handle is

* a local directory: an export base (`<model>_enet/<version>/`, `<model>_generator/<version>/`,
  as `python -m export` and the trainers write), or a Keras preset in the keras-hub layout
  (`config.json`, `model.weights.h5`, `metadata.json`; see `save_preset`);
* `file://PATH` or PATH, PATH being such a directory or a `.tar.gz` of one;
* `https://.../NAME.tar.gz`, a TF Hub-style compressed export (`python -m export --hub`);
* a preset name from `PRESETS`.

`#sha256=HEX` at the end of a tarball handle pins its content and is checked for every
kind of tarball handle. A remote handle must carry one unless the caller passes
`allow_unpinned=True`; plain `http://` is refused without one.

Tarballs are unpacked under `$ZOO_CACHE_DIR/hub/<sha256 of the tarball>/` (see
`zoo.cache`), keyed by content, so a re-exported tarball at the same path is a new entry.
Unpacking accepts regular files and directories only (an export has no links), with
relative names inside the archive, within a member count and a size cap; it writes into a
fresh temporary directory that is renamed into place, with a manifest of every file's
sha256 that is checked again on every cache hit.
"""

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from zoo.cache import cache_dir

# name -> {"url": ..., "sha256": ...}. The project hosts no weights yet; `register_preset`
# adds entries (an organisation's own model store, or a test's local server).
PRESETS = {}


# Caps on what one tarball may unpack to; an export of the zoo's models is far below them.
MAX_TARBALL_BYTES = 4 << 30
MAX_UNPACKED_BYTES = 8 << 30
MAX_MEMBERS = 20_000
MANIFEST = ".zoo-manifest.json"
VERSION_NAME = re.compile(r"[0-9]{1,18}")  # a servable version directory: ASCII digits, fits int64
_CHUNK = 1 << 20


def cluster_ids(cluster, count=1):
    """int64 ids [N] for `sample(cluster, count)`: `count` copies of one id, or the given ids."""
    import numpy as np

    return np.full([count], cluster, np.int64) if np.ndim(cluster) == 0 else np.asarray(cluster, np.int64)


class HubError(ValueError):
    """A handle that cannot be loaded; the message names the handle and the reason."""


def version_dirs(servable_dir):
    """{version: directory} of the complete versions (`saved_model.pb` present) under a
    servable directory. Only ASCII digit names count: `str.isdigit` also accepts
    characters such as superscripts that `int()` refuses."""
    versions = {}
    try:
        entries = list(Path(servable_dir).iterdir())
    except FileNotFoundError:
        return versions
    for entry in entries:
        if VERSION_NAME.fullmatch(entry.name) and (entry / "saved_model.pb").exists():
            versions[int(entry.name)] = entry
    return versions


PAIRED_KINDS = ("_enet", "_generator")


def paired_version_dirs(servable_dir):
    """`version_dirs`, restricted for a zoo servable (`M_enet`, `M_generator`) whose sibling
    is on disk to the versions that the sibling has too: an export writes a version for
    both, and a reader must never pair E-net vN with generator vN-1."""
    servable_dir = Path(servable_dir)
    versions = version_dirs(servable_dir)
    for kind in PAIRED_KINDS:
        if servable_dir.name.endswith(kind):
            model = servable_dir.name[: -len(kind)]
            for other in PAIRED_KINDS:
                sibling = servable_dir.with_name(model + other)
                if other != kind and sibling.is_dir():
                    common = set(version_dirs(sibling))
                    versions = {v: path for v, path in versions.items() if v in common}
    return versions


def register_preset(name, url, sha256=None):
    PRESETS[name] = {"url": url, "sha256": sha256}


# -- what load() gives back ---------------------------------------------------------------------
class SavedModelClusterer:
    """The zoo's surface over exported SavedModels: classify, cluster_probs, embed, generate
    and sample, named and shaped as on the Keras models and the serving client. Bad input
    (a wrong shape, a cluster id out of range) is a one-line ValueError, as the server's
    INVALID_ARGUMENT."""

    def __init__(self, enet_dir, generator_dir):
        import tensorflow as tf

        self.enet = tf.saved_model.load(str(enet_dir))
        self.generator = tf.saved_model.load(str(generator_dir))
        info = json.loads((Path(enet_dir) / "assets.extra" / "zoo.json").read_text())
        self.info = info
        self.zoo_name, self.num_clusters = info["model"], int(info["clusters"])
        self.data_shape, self.latent_dim = tuple(info["input_shape"]), int(info["latent_dim"])

    def classify(self, x):
        """[N, *data_shape] -> {"probabilities" [N, K], "cluster" [N], "embedding" [N, d]}."""
        return self.enet.signatures["serving_default"](images=self._checked(x, self.data_shape, "images"))

    def cluster_probs(self, x):
        return self.classify(x)["probabilities"]

    def embed(self, x):
        return self.classify(x)["embedding"]

    def generate(self, z, c):
        """Noise [N, latent_dim] and cluster ids [N] -> samples [N, *data_shape]."""
        import tensorflow as tf

        noise = self._checked(z, (self.latent_dim,), "noise")
        clusters = self._clusters(c)
        if len(clusters) != len(noise):
            raise ValueError(f"noise and cluster must have the same length N; got {len(noise)} and {len(clusters)}")
        return self.generator.signatures["serving_default"](noise=noise, cluster=tf.constant(clusters))["images"]

    def sample(self, cluster, count=1, seed=0, scale=None):
        """`count` samples of `cluster` (an id, or one id per sample) with the noise drawn
        inside the SavedModel from `seed`; `scale` (GM-GAN) multiplies the latent spread."""
        import tensorflow as tf

        inputs = {"cluster": tf.constant(self._clusters(cluster_ids(cluster, count))),
                  "seed": tf.constant(seed, tf.int64)}
        signature = self.generator.signatures["sample"]
        if scale is not None:
            if "scale" not in signature.structured_input_signature[1]:
                raise ValueError(f"scale: the {self.zoo_name} generator has no latent scale (GM-GAN's has)")
            inputs["scale"] = tf.constant(scale, tf.float32)
        return signature(**inputs)["images"]

    def _checked(self, x, shape, what):
        import numpy as np
        import tensorflow as tf

        x = np.asarray(x, np.float32)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
            expected = "[" + ", ".join(["N", *map(str, shape)]) + "]"
            raise ValueError(f"{what} must have shape {expected}; got shape {list(x.shape)}")
        return tf.constant(x)

    def _clusters(self, c):
        import numpy as np

        c = np.asarray(c, np.int64).reshape(-1)
        if c.size and (c.min() < 0 or c.max() >= self.num_clusters):
            raise ValueError(f"cluster ids must lie in [0, {self.num_clusters}); got {c.tolist()[:10]}")
        return c


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
def load(handle, model=None, allow_unpinned=False):
    """The model behind `handle` (see the module docstring). `model` picks one zoo model
    when an export base holds several (e.g. "ganem"). `allow_unpinned=True` accepts an
    https tarball without `#sha256=` (fetched again at every load)."""
    handle = str(handle)
    if handle in PRESETS:
        preset = PRESETS[handle]
        url = preset["url"] + (f"#sha256={preset['sha256']}" if preset.get("sha256") else "")
        return load(url, model, allow_unpinned)
    location, expected = _split_pin(handle)
    parsed = urllib.parse.urlparse(location)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if expected is None and (scheme == "http" or not allow_unpinned):
            raise HubError(f"cannot load {handle!r}: a remote handle needs #sha256=<hex> at the end"
                           + (" (plain http:// is never trusted without one)" if scheme == "http"
                              else ", or allow_unpinned=True"))
        return _load_directory(_download(location, expected), model, handle)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise HubError(f"cannot load {handle!r}: file:// handles name a local path (host {parsed.netloc!r})")
        location = urllib.parse.unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise HubError(f"cannot load {handle!r}: unknown scheme {parsed.scheme!r} (use a directory, file://, "
                       f"http(s)://...tar.gz or a preset name: {', '.join(sorted(PRESETS)) or 'none registered'})")
    path = Path(location)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with open(path, "rb") as source:
            digest = _hash_stream(source, MAX_TARBALL_BYTES, handle)
        if expected is not None and digest != expected:
            raise HubError(f"checksum mismatch for {handle!r}: expected sha256 {expected}, got {digest}")
        return _load_directory(_cached_entry(digest, lambda: path, handle), model, handle)
    if not path.exists():
        raise HubError(f"cannot load {handle!r}: no such directory or file, and no preset of that name "
                       f"(presets: {', '.join(sorted(PRESETS)) or 'none registered'})")
    if expected is not None:
        raise HubError(f"cannot load {handle!r}: #sha256= pins a .tar.gz, not a directory")
    return _load_directory(path, model, handle)


def _split_pin(handle):
    """(handle without its pin, expected sha256 or None). Any `#...` fragment on a URL must
    be a well-formed `sha256=` pin: a misspelt one is an error, never silently unchecked."""
    location, sep, fragment = handle.rpartition("#")
    if not sep:
        return handle, None
    is_url = re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", handle) is not None
    key, eq, value = fragment.partition("=")
    if not eq or key.strip().lower() != "sha256":
        if is_url:
            raise HubError(f"cannot load {handle!r}: the only fragment understood is #sha256=<64 hex digits>")
        return handle, None  # a local path may contain '#'
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise HubError(f"cannot load {handle!r}: #sha256= needs 64 hex digits, got {value[:80]!r}")
    return location, value


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
    enets, generators = version_dirs(path / f"{name}_enet"), version_dirs(path / f"{name}_generator")
    common = set(enets) & set(generators)
    if not common:
        raise HubError(f"{handle!r}: {name}_enet and {name}_generator have no complete version in common")
    version = max(common)
    try:
        return SavedModelClusterer(enets[version], generators[version])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HubError(f"{handle!r}: version {version} of {name} cannot be loaded: "
                       f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None


def _hash_stream(stream, limit, what, out=None):
    """sha256 of `stream` (copied to `out` if given), refusing more than `limit` bytes."""
    digest, total = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise HubError(f"{what} is larger than {limit} bytes")
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest()


def _download(url, expected):
    """The unpacked directory of an http(s) tarball: the verified cache entry of `expected`,
    else downloaded, checked and unpacked."""
    if expected is not None:
        entry = _verified_entry(expected)
        if entry is not None:
            return entry
    hub_dir = cache_dir() / "hub"
    hub_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=hub_dir, prefix=".download-", suffix=".tar.gz")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            final = urllib.parse.urlparse(response.geturl()).scheme.lower()
            if expected is None and final != "https":
                raise HubError(f"{url} redirected to {final}://, which an unpinned handle does not trust")
            size = response.headers.get("Content-Length")
            if size is not None and not size.strip().isdigit():
                raise HubError(f"download of {url} has a malformed Content-Length {size[:40]!r}")
            if size is not None and int(size) > MAX_TARBALL_BYTES:
                raise HubError(f"{url} is larger than {MAX_TARBALL_BYTES} bytes ({size})")
            received = _Capped(response, MAX_TARBALL_BYTES, f"download of {url}")
            while chunk := received.read(_CHUNK):
                out.write(chunk)
        digest = received.digest.hexdigest()
        if size is not None and received.count != int(size):
            raise HubError(f"download of {url} was cut short ({received.count} of {size} bytes)")
        if expected is not None and digest != expected:
            raise HubError(f"checksum mismatch for {url}: expected sha256 {expected}, got {digest}")
        return _cached_entry(digest, lambda: Path(tmp), url)
    except (OSError, urllib.error.URLError) as err:
        raise HubError(f"cannot download {url}: {getattr(err, 'reason', err)}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _verified_entry(digest):
    """The cache entry of the tarball with sha256 `digest` if it is there and every file still
    matches its manifest; a damaged entry is moved aside and removed so that it is rebuilt."""
    target = cache_dir() / "hub" / digest
    if not target.exists():
        return None
    if _matches_manifest(target, digest):
        return target
    stale = target.with_name(f".stale-{digest[:16]}-{os.getpid()}-{threading.get_ident()}")
    try:
        os.rename(target, stale)
    except OSError:
        return None  # another load moved it first; it rebuilds the entry or we do
    shutil.rmtree(stale, ignore_errors=True)
    return None


def _matches_manifest(target, digest):
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("tarball_sha256") != digest or not isinstance(files, dict):
            return False
        present = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() or p.is_symlink()}
        if present != set(files) | {MANIFEST}:
            return False
        for name, (size, file_digest) in files.items():
            path = target / name
            if path.is_symlink() or path.stat().st_size != size:
                return False
            with open(path, "rb") as stream:
                if _hash_stream(stream, size, name) != file_digest:
                    return False
        return True
    except (OSError, ValueError, KeyError, TypeError, HubError):
        return False


def _cached_entry(digest, tarball, label):
    """The verified cache entry of a tarball whose content hashes to `digest`; `tarball()`
    gives its path when the entry has to be (re)built; `label` names it in errors."""
    entry = _verified_entry(digest)
    if entry is not None:
        return entry
    target = cache_dir() / "hub" / digest
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        files = _safe_unpack(tarball(), staging, digest, label)
        (staging / MANIFEST).write_text(json.dumps({"tarball_sha256": digest, "files": files}))
        try:
            os.rename(staging, target)
        except OSError:
            # A concurrent load may have won the race: its entry is as good, once verified.
            if _verified_entry(digest) is None:
                raise HubError(f"cannot place the unpacked tarball at {target}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class _Capped:
    """A read-only stream that refuses to give more than `limit` bytes (it bounds what the
    gzip layer may inflate, headers included) and hashes what it gives."""

    def __init__(self, stream, limit, what):
        self.stream, self.limit, self.what, self.count = stream, limit, what, 0
        self.digest = hashlib.sha256()

    def read(self, n=-1):
        n = self.limit + 1 - self.count if n is None or n < 0 else min(n, self.limit + 1 - self.count)
        chunk = self.stream.read(n)
        self.count += len(chunk)
        if self.count > self.limit:
            raise HubError(f"{self.what} is larger than {self.limit} bytes")
        self.digest.update(chunk)
        return chunk


def _safe_unpack(tarball, staging, digest, label):
    """Unpacks `tarball`, whose sha256 must be `digest` (checked on the bytes actually
    unpacked, so a file changed after it was hashed is caught), into the empty directory
    `staging`; returns {name: (size, sha256)}.

    Written by hand rather than with `extractall(filter="data")`: the filter has had
    bypasses (a symlink chain past PATH_MAX, then a hard link) and is missing from early
    3.10 releases. Only regular files and directories are accepted, with relative names and
    no '..', each file created new (never through an existing path), within the caps."""
    import gzip
    import zlib

    files, members, declared = {}, 0, 0
    try:
        with open(tarball, "rb") as source:
            raw = _Capped(source, MAX_TARBALL_BYTES, "the tarball")
            inflated = gzip.GzipFile(fileobj=raw, mode="rb")
            # Headers and padding add at most a few blocks per member on top of the data.
            capped = _Capped(inflated, MAX_UNPACKED_BYTES + (MAX_MEMBERS + 4) * 3 * tarfile.BLOCKSIZE,
                             "the unpacked archive")
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for member in tar:
                    members += 1
                    if members > MAX_MEMBERS:
                        raise HubError(f"it has more than {MAX_MEMBERS} members")
                    name = _member_name(member.name)
                    if member.isdir():
                        if name:
                            (staging / name).mkdir(parents=True, exist_ok=True)
                        continue
                    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                        raise HubError(f"member {member.name!r} is not a regular file or directory "
                                       f"(an export has no links, devices or sparse files)")
                    if not name:
                        raise HubError("a file member has an empty name")
                    declared += member.size
                    if declared > MAX_UNPACKED_BYTES:
                        raise HubError(f"it unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                    path = staging / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    # O_EXCL | O_NOFOLLOW: a name given twice, or a path through anything but a
                    # directory made here, is an error rather than a write elsewhere.
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                    with os.fdopen(fd, "wb") as out:
                        files[name] = (member.size, _hash_stream(tar.extractfile(member), member.size,
                                                                 member.name, out))
            while raw.read(_CHUNK):  # the rest of the file, so that the hash covers all of it
                pass
    except HubError as err:
        raise HubError(f"{label} was refused: {err}") from None
    except FileExistsError:
        raise HubError(f"{label} was refused: it names one path twice (or as a file and a directory)") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise HubError(f"{label} is not a readable .tar.gz: {err}") from None
    if raw.digest.hexdigest() != digest:
        raise HubError(f"{label} changed while it was unpacked (sha256 {raw.digest.hexdigest()}, "
                       f"expected {digest})")
    if not files:
        raise HubError(f"{label} is not a readable .tar.gz: it holds no files")
    return files


def _member_name(name):
    """The normalised relative name of a member, or an error for absolute names and '..'."""
    if "\0" in name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise HubError(f"member {name!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HubError(f"member {name!r} reaches outside the archive with '..'")
    return "/".join(parts)
