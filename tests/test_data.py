"""Tests for zoo.data: every source, and one-line DataError messages for every bad input."""
import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from zoo import data
from zoo.data import DataError, labeled_subset, load_dataset


def raises_one_line(match, func, *args, **kwargs):
    """Asserts func raises DataError whose one-line message matches ``match``; returns it."""
    with pytest.raises(DataError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# --------------------------------------------------------------------------- import and API

def test_import_is_lazy():
    code = ("import sys, zoo.data; "
            "print(any(m in sys.modules for m in ('tensorflow', 'tensorflow_datasets', "
            "'sklearn', 'mlxtend', 'PIL')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_datasets_table_lists_builtins_and_tfds():
    for name in ("mnist5k", "digits", "synthetic", "mnist", "fashion_mnist", "svhn_cropped",
                 "cifar10", "celeb_a"):
        assert isinstance(data.DATASETS[name], str) and data.DATASETS[name]
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- built-ins

def test_mnist5k():
    ds = load_dataset("mnist5k")
    assert ds.name == "mnist5k" and ds.kind == "image"
    assert ds.x.shape == (5000, 28, 28, 1) and ds.x.dtype == np.float32
    assert ds.input_shape == (28, 28, 1) and len(ds) == 5000
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.y.dtype == np.int64 and ds.y.shape == (5000,)
    assert ds.num_classes == 10
    assert np.all(np.bincount(ds.y) == 500)
    # Default spec is mnist5k, and the cache hands out copies.
    ds.x[:] = 0
    again = load_dataset()
    assert again.name == "mnist5k" and again.x.max() == 1.0


def test_digits():
    ds = load_dataset("digits")
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.kind == "image" and ds.num_classes == 10 and ds.y.dtype == np.int64


def test_single_split_sources_reject_other_splits():
    msg = raises_one_line("single split", load_dataset, "digits", split="test")
    assert "'test'" in msg


# --------------------------------------------------------------------------- synthetic

def test_synthetic_defaults():
    ds = load_dataset("synthetic")
    assert ds.kind == "vector" and ds.x.shape == (10000, 100) and ds.x.dtype == np.float32
    assert ds.num_classes == 10 and ds.y.dtype == np.int64
    assert np.all(np.bincount(ds.y) == 1000)
    np.testing.assert_allclose(ds.x.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(ds.x.std(axis=0), 1, atol=1e-3)


def test_synthetic_parameters_and_determinism():
    spec = "synthetic:clusters=4,samples=503,dim=7,seed=3"
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.x.shape == (503, 7) and a.num_classes == 4 and a.input_shape == (7,)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert sorted(np.bincount(a.y)) == [125, 126, 126, 126]
    other = load_dataset("synthetic:clusters=4,samples=503,dim=7,seed=4")
    assert not np.allclose(a.x, other.x)
    # The seed keyword is used when the spec has none; the spec's seed wins otherwise.
    kw = load_dataset("synthetic:clusters=4,samples=503,dim=7", seed=3)
    np.testing.assert_array_equal(a.x, kw.x)
    wins = load_dataset(spec, seed=99)
    np.testing.assert_array_equal(a.x, wins.x)


def test_synthetic_clusters_are_separable():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    ds = load_dataset("synthetic:clusters=5,samples=1000,dim=20")
    pred = KMeans(5, n_init=4, random_state=0).fit_predict(ds.x)
    assert adjusted_rand_score(ds.y, pred) > 0.9


def test_synthetic_errors():
    msg = raises_one_line("unknown synthetic parameter", load_dataset,
                          "synthetic:clusters=3,bogus=1,zz=2")
    assert "bogus" in msg and "zz" in msg and "clusters" in msg  # names them and the valid ones
    raises_one_line("must be an integer", load_dataset, "synthetic:dim=abc")
    raises_one_line("name=value", load_dataset, "synthetic:dim")
    raises_one_line("clusters must be at least 1", load_dataset, "synthetic:clusters=0")


# --------------------------------------------------------------------------- npz

def test_npz_vectors_with_labels(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.normal(5.0, 3.0, size=(50, 6))
    x[:, 2] = 7.0  # constant column stays finite
    y = np.repeat([3, 7], 25)
    path = tmp_path / "vec.npz"
    np.savez(path, x=x, y=y)
    ds = load_dataset(str(path))
    assert ds.kind == "vector" and ds.x.shape == (50, 6) and ds.x.dtype == np.float32
    assert np.all(np.isfinite(ds.x))
    np.testing.assert_allclose(ds.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.delete(ds.x.std(axis=0), 2), 1, atol=1e-4)
    assert ds.y.dtype == np.int64 and ds.num_classes == 2
    np.testing.assert_array_equal(ds.y, np.repeat([0, 1], 25))  # relabelled to 0..K-1


def test_npz_uint8_images_and_key_names(tmp_path):
    imgs = np.random.RandomState(1).randint(0, 256, size=(10, 5, 4, 3)).astype(np.uint8)
    imgs[0, 0, 0, 0], imgs[0, 0, 0, 1] = 0, 255
    path = tmp_path / "img.npz"
    np.savez(path, images=imgs, labels=np.arange(10) % 2)
    ds = load_dataset(str(path))
    assert ds.kind == "image" and ds.x.shape == (10, 5, 4, 3) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x, imgs / 255.0, atol=1e-6)
    assert ds.num_classes == 2 and list(ds.y[:4]) == [0, 1, 0, 1]


def test_npz_grayscale_3d_and_first_array(tmp_path):
    imgs = np.random.RandomState(2).rand(6, 7, 8).astype(np.float32)  # floats in [0, 1]
    path = tmp_path / "gray.npz"
    np.savez(path, whatever=imgs)
    ds = load_dataset(str(path))
    assert ds.x.shape == (6, 7, 8, 1) and ds.y is None and ds.num_classes is None
    np.testing.assert_allclose(ds.x[..., 0], imgs)
    # Float images with max > 1 are taken as 0..255.
    np.savez(path, X=imgs * 255.0)
    np.testing.assert_allclose(load_dataset(str(path)).x[..., 0], imgs, atol=1e-6)


def test_npz_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.linspace(-1, 1, 2 * 4 * 4).reshape(2, 4, 4))
    msg = raises_one_line("must lie in", load_dataset, str(path))
    assert "[-1, 1]" in msg
    np.savez(path, x=np.full((3, 4, 4), 300.0))
    raises_one_line(r"range \[300, 300\]", load_dataset, str(path))
    np.savez(path, x=np.zeros((3, 4, 4, 2)))
    msg = raises_one_line(r"expected images \[N, H, W, C\] with C in \(1, 3\) or vectors",
                          load_dataset, str(path))
    assert "(3, 4, 4, 2)" in msg and str(path) in msg
    np.savez(path, x=np.zeros(5))
    raises_one_line(r"got shape \(5,\)", load_dataset, str(path))
    np.savez(path, x=np.array([[0.0, np.nan], [1.0, 2.0]]))
    raises_one_line("NaN or infinite", load_dataset, str(path))
    np.savez(path, x=np.zeros((1, 3)))
    raises_one_line("at least 2", load_dataset, str(path))
    np.savez(path, x=np.zeros((4, 3)), y=np.arange(3))
    raises_one_line("3 labels for 4 samples", load_dataset, str(path))
    np.savez(path, y=np.arange(3))
    raises_one_line("no data array", load_dataset, str(path))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    raises_one_line("cannot read", load_dataset, str(tmp_path / "junk.npz"))


# --------------------------------------------------------------------------- IDX

def _write_idx(path, array, code=0x08, compress=False):
    payload = struct.pack(">BBBB", 0, 0, code, array.ndim)
    payload += struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    imgs = np.random.RandomState(3).randint(0, 256, size=(4, 6, 5)).astype(np.uint8)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if compress else ""))
    _write_idx(path, imgs, compress=compress)
    ds = load_dataset(str(path))
    assert ds.kind == "image" and ds.x.shape == (4, 6, 5, 1) and ds.y is None
    np.testing.assert_allclose(ds.x[..., 0], imgs / 255.0, atol=1e-6)


def test_idx_float_vectors(tmp_path):
    vec = np.random.RandomState(4).rand(8, 3).astype(np.float32)
    path = tmp_path / "vectors.idx"
    _write_idx(path, vec, code=0x0D)
    ds = load_dataset(str(path))
    assert ds.kind == "vector" and ds.x.shape == (8, 3)


def test_idx_errors(tmp_path):
    path = tmp_path / "broken-idx3-ubyte"
    _write_idx(path, np.zeros((2, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-4])
    raises_one_line("should hold 18 data bytes", load_dataset, str(path))
    other = tmp_path / "notes.txt"
    other.write_text("hello\nworld\n")
    raises_one_line("not a .npz file, an IDX file", load_dataset, str(other))


# --------------------------------------------------------------------------- image folders

def _save(folder, name, array, mode):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(folder / name)


def test_image_folder_grayscale(tmp_path):
    rng = np.random.RandomState(5)
    arrays = [rng.randint(0, 256, size=(6, 9)).astype(np.uint8) for _ in range(3)]
    for i, arr in enumerate(arrays):
        _save(tmp_path, f"img{i}.png", arr, "L")
    (tmp_path / "readme.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    ds = load_dataset(str(tmp_path))
    assert ds.kind == "image" and ds.x.shape == (3, 6, 9, 1) and ds.y is None
    np.testing.assert_allclose(ds.x[..., 0], np.stack(arrays) / 255.0, atol=1e-6)


def test_image_folder_rgb_and_mixed_modes(tmp_path):
    rng = np.random.RandomState(6)
    rgb = rng.randint(0, 256, size=(5, 4, 3)).astype(np.uint8)
    gray = rng.randint(0, 256, size=(5, 4)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 4, 1), 255, np.uint8)], axis=-1)
    _save(tmp_path, "a.png", rgb, "RGB")
    _save(tmp_path, "b.bmp", gray, "L")
    _save(tmp_path, "c.png", rgba, "RGBA")
    ds = load_dataset(str(tmp_path))
    assert ds.x.shape == (3, 5, 4, 3)
    np.testing.assert_allclose(ds.x[0], rgb / 255.0, atol=1e-6)  # sorted by name
    np.testing.assert_allclose(ds.x[1], np.repeat(gray[..., None], 3, -1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(ds.x[2], rgb / 255.0, atol=1e-6)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    raises_one_line("no image files", load_dataset, str(empty))

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    _save(corrupt, "a.png", np.zeros((4, 4), np.uint8), "L")
    (corrupt / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    msg = raises_one_line("cannot read image", load_dataset, str(corrupt))
    assert "b.png" in msg

    sizes = tmp_path / "sizes"
    sizes.mkdir()
    _save(sizes, "a.png", np.zeros((4, 4), np.uint8), "L")
    _save(sizes, "b.png", np.zeros((4, 5), np.uint8), "L")
    msg = raises_one_line("same size", load_dataset, str(sizes))
    assert "b.png" in msg and "5x4" in msg and "4x4" in msg

    single = tmp_path / "single"
    single.mkdir()
    _save(single, "a.png", np.zeros((4, 4), np.uint8), "L")
    raises_one_line("at least 2", load_dataset, str(single))


# --------------------------------------------------------------------------- unknown and tfds

def test_unknown_name_lists_valid_names(tmp_path):
    msg = raises_one_line("unknown dataset 'nope'", load_dataset, "nope")
    for name in ("mnist5k", "digits", "synthetic", "mnist", "cifar10", "celeb_a"):
        assert name in msg
    raises_one_line("no such file", load_dataset, str(tmp_path / "missing.npz"))


def test_tfds_not_prepared_gives_data_error(tmp_path):
    msg = raises_one_line("tfds dataset 'mnist' is not prepared", load_dataset, "mnist",
                          data_dir=str(tmp_path))
    assert str(tmp_path) in msg and "--data-dir" in msg and "tensorflow_datasets" in msg
    msg = raises_one_line("not prepared", load_dataset, "tfds:fashion_mnist",
                          data_dir=str(tmp_path))
    assert "fashion_mnist" in msg
    raises_one_line("unknown tfds dataset", load_dataset, "tfds:no_such_dataset_xyz",
                    data_dir=str(tmp_path))


def test_tfds_conversion_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        mnist = load_dataset("mnist", data_dir=str(tmp_path))
        celeba = load_dataset("celeb_a", data_dir=str(tmp_path))
    assert mnist.x.shape == (6, 28, 28, 1) and mnist.num_classes == 10
    assert mnist.y.dtype == np.int64 and 0 <= mnist.x.min() and mnist.x.max() <= 1
    assert celeba.x.shape == (6, 64, 64, 3) and celeba.y is None and celeba.num_classes is None


# --------------------------------------------------------------------------- helpers

def test_labeled_subset_balanced_and_deterministic():
    y = np.repeat(np.arange(4), 30)
    idx = labeled_subset(y, 10, 4, seed=0)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert list(np.bincount(y[idx], minlength=4)) == [3, 3, 2, 2]  # remainder to first classes
    np.testing.assert_array_equal(idx, labeled_subset(y, 10, 4, seed=0))
    assert not np.array_equal(idx, labeled_subset(y, 10, 4, seed=1))
    assert list(np.bincount(y[labeled_subset(y, 40, 4, seed=2)])) == [10] * 4


def test_labeled_subset_errors():
    y = np.array([0] * 10 + [1] * 2)
    raises_one_line("cannot draw 13 labelled examples from 12", labeled_subset, y, 13, 2, 0)
    raises_one_line("class 1 has only 2 examples", labeled_subset, y, 8, 2, 0)
    raises_one_line("cannot cover 2 classes", labeled_subset, y, 1, 2, 0)
    raises_one_line("no labels", labeled_subset, None, 4, 2, 0)


# --------------------------------------------------------------------------- own images, labels

def test_class_folders_label_by_sorted_name(tmp_path):
    for name in ("b_dog", "a_cat"):
        (tmp_path / name).mkdir()
        for i in range(2):
            _save(tmp_path / name, f"{i}.png", np.full((4, 4), 50 * i, np.uint8), "L")
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ["a_cat", "b_dog"] and ds.y.tolist() == [0, 0, 1, 1]
    assert ds.paths == ["a_cat/0.png", "a_cat/1.png", "b_dog/0.png", "b_dog/1.png"]
    flat = load_dataset(str(tmp_path / "a_cat"))
    assert flat.y is None and flat.class_names is None and flat.paths == ["0.png", "1.png"]


def test_class_folder_errors_name_the_path(tmp_path):
    mixed = tmp_path / "mixed"
    (mixed / "cats").mkdir(parents=True)
    _save(mixed, "loose.png", np.zeros((4, 4), np.uint8), "L")
    _save(mixed / "cats", "a.png", np.zeros((4, 4), np.uint8), "L")
    msg = raises_one_line("both images", load_dataset, str(mixed))
    assert "loose.png" in msg and "cats" in msg

    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "dogs").mkdir()
    _save(empty / "cats", "a.png", np.zeros((4, 4), np.uint8), "L")
    _save(empty / "cats", "b.png", np.zeros((4, 4), np.uint8), "L")
    msg = raises_one_line("holds no image files", load_dataset, str(empty))
    assert str(empty / "dogs") in msg

    corrupt = tmp_path / "corrupt"
    (corrupt / "cats").mkdir(parents=True)
    _save(corrupt / "cats", "a.png", np.zeros((4, 4), np.uint8), "L")
    (corrupt / "cats" / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    msg = raises_one_line("cannot read image", load_dataset, str(corrupt))
    assert str(corrupt / "cats" / "b.jpg") in msg


@pytest.mark.parametrize("compress", [False, True])
def test_idx_labels_beside_the_images_are_found(tmp_path, compress):
    gz = ".gz" if compress else ""
    imgs = np.random.RandomState(7).randint(0, 256, size=(6, 4, 4)).astype(np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{gz}", imgs, compress=compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{gz}", np.array([3, 1, 3, 1, 0, 0], np.uint8),
               compress=compress)
    ds = load_dataset(str(tmp_path / f"train-images-idx3-ubyte{gz}"))
    assert ds.y.tolist() == [2, 1, 2, 1, 0, 0] and ds.num_classes == 3
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{gz}", np.zeros(5, np.uint8), compress=compress)
    raises_one_line("5 labels for the 6 images", load_dataset, str(tmp_path / f"train-images-idx3-ubyte{gz}"))


def test_labels_file_for_arrays(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.random.RandomState(8).rand(4, 3))
    (tmp_path / "names.txt").write_text("dog\ncat\ndog\ncat\n")
    ds = load_dataset(str(tmp_path / "x.npz"), labels_file=str(tmp_path / "names.txt"))
    assert ds.y.tolist() == [1, 0, 1, 0] and ds.class_names == ["cat", "dog"]
    np.savez(tmp_path / "y.npz", y=np.array([5, 6, 5, 6]))
    assert load_dataset(str(tmp_path / "x.npz"), labels_file=str(tmp_path / "y.npz")).y.tolist() == [0, 1, 0, 1]
    _write_idx(tmp_path / "y.idx", np.array([1, 1, 0, 0], np.uint8))
    assert load_dataset(str(tmp_path / "x.npz"), labels_file=str(tmp_path / "y.idx")).y.tolist() == [1, 1, 0, 0]
    (tmp_path / "short.txt").write_text("1\n2\n")
    raises_one_line("2 labels for 4 samples", load_dataset, str(tmp_path / "x.npz"),
                    labels_file=str(tmp_path / "short.txt"))
    raises_one_line("does not exist", load_dataset, str(tmp_path / "x.npz"), labels_file=str(tmp_path / "no"))
    raises_one_line("built-in", load_dataset, "digits", labels_file=str(tmp_path / "y.npz"))


# --------------------------------------------------------------------------- data bombs

def test_npz_decompresses_only_the_arrays_it_uses(tmp_path, monkeypatch):
    import zipfile

    path = tmp_path / "many.npz"
    np.savez_compressed(path, x=np.zeros((3, 2)), y=np.arange(3), junk=np.zeros(1 << 22))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    load_dataset(str(path))
    assert sorted(opened) == ["x.npy", "y.npy"]


def _npz_with_header(path, shape, dtype="<f8", payload=b"\0" * 16):
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + payload)


def test_npz_headers_are_checked_before_anything_is_allocated(tmp_path):
    path = tmp_path / "bomb.npz"
    _npz_with_header(path, (1 << 40, 8))
    raises_one_line("more than half of this machine's memory", load_dataset, str(path))
    _npz_with_header(path, (1 << 62, 1 << 62))  # the element count overflows int64
    raises_one_line("more than half of this machine's memory", load_dataset, str(path))
    _npz_with_header(path, (4, 4))  # declares 128 bytes, holds 16
    raises_one_line("truncated|corrupt", load_dataset, str(path))
    _npz_with_header(path, (2,) * 40)
    raises_one_line("40 dimensions", load_dataset, str(path))


def test_idx_header_is_checked_before_decompressing(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    # Declares 2^32 x 2^32 x 2^32 bytes; a few bytes follow.
    path.write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 1 << 31, 1 << 31, 1 << 31) + b"\0" * 64))
    raises_one_line("more than half of this machine's memory", load_dataset, str(path))
    path.write_bytes(gzip.compress(struct.pack(">BBBB", 0, 0, 0x08, 100) + struct.pack(">100I", *[1] * 100)))
    raises_one_line("100 dimensions", load_dataset, str(path))
    good = gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 2, 2) + bytes(range(8)))
    path.write_bytes(good[:12] + bytes(b ^ 0x5A for b in good[12:-8]) + good[-8:])  # corrupt deflate data
    raises_one_line("cannot read", load_dataset, str(path))
    path.write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 2, 2) + bytes(9)))
    raises_one_line("should hold 8 data bytes", load_dataset, str(path))


def test_huge_finite_values_standardise_to_finite_values(tmp_path):
    x = np.array([[1.7e308, 1.0], [-1.7e308, 2.0], [1.0e308, 3.0]])
    np.savez(tmp_path / "big.npz", x=x)
    ds = load_dataset(str(tmp_path / "big.npz"))
    assert np.all(np.isfinite(ds.x))
    np.testing.assert_allclose(ds.x.std(axis=0), 1, atol=1e-4)
