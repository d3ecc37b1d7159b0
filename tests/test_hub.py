"""zoo.load(handle): local exports, file://, tarballs over HTTP from 127.0.0.1 with the cache and
checksums, presets, Keras presets in the keras-hub layout, and crafted tarballs that must be
refused without writing anything outside the cache."""

import functools
import hashlib
import http.server
import io
import shutil
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf

import zoo
from export import export_servables
from export.__main__ import write_hub_tarball
from zoo import hub
from zoo.ganem import GANEM

SHAPE = (8, 8, 1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = GANEM(SHAPE, 3, latent_dim=5, embedding_dim=2, seed=4)
    base = tmp_path_factory.mktemp("export")
    export_servables(model, base)
    tarball = write_hub_tarball(base, "ganem")
    return model, base, tarball


@pytest.fixture(scope="module")
def http_root(exported, tmp_path_factory):
    """A local HTTP server on 127.0.0.1 serving a folder with the tarball and a truncated copy."""
    _, _, tarball = exported
    root = tmp_path_factory.mktemp("www")
    (root / "ganem.tar.gz").write_bytes(tarball.read_bytes())
    (root / "broken.tar.gz").write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


def images(n=4):
    return np.random.default_rng(0).uniform(size=(n, *SHAPE)).astype(np.float32)


def check_same(loaded, model):
    np.testing.assert_allclose(loaded.cluster_probs(images()), model.cluster_probs(images()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.embed(images()), model.embed(images()), rtol=1e-5, atol=1e-6)
    z, c = model.sample_latent(3, seed=1), tf.constant([0, 1, 2])
    np.testing.assert_allclose(loaded.generate(z, c), model.generate(z, c), rtol=1e-5, atol=1e-6)


def test_a_loaded_export_speaks_the_models_vocabulary(exported):
    model, base, _ = exported
    loaded = zoo.load(base)
    answer, expected = loaded.classify(images()), model.classify(images())
    assert set(answer) == set(expected) == {"probabilities", "cluster", "embedding"}
    np.testing.assert_array_equal(answer["cluster"], expected["cluster"])
    np.testing.assert_allclose(loaded.sample(2, count=3, seed=7), model.sample(2, count=3, seed=7),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.sample([0, 2], seed=7), model.sample([0, 2], seed=7), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.cluster_probs(np.zeros((2, 28, 28, 1))), r"images must have shape \[N, 8, 8, 1\]; got shape \[2, 28"),
    (lambda m: m.classify(np.zeros((8, 8, 1))), r"images must have shape \[N, 8, 8, 1\]; got shape \[8, 8, 1\]"),
    (lambda m: m.generate(np.zeros((2, 4)), [0, 1]), r"noise must have shape \[N, 5\]"),
    (lambda m: m.generate(np.zeros((2, 5)), [0]), "same length N"),
    (lambda m: m.sample(3), r"cluster ids must lie in \[0, 3\)"),
    (lambda m: m.sample(0, scale=0.5), "no latent scale"),
])
def test_bad_input_to_a_loaded_export_is_one_line(exported, call, message):
    _, base, _ = exported
    with pytest.raises(ValueError, match=message) as error:
        call(zoo.load(base))
    assert "\n" not in str(error.value)


def test_local_directory_and_file_url(exported):
    model, base, tarball = exported
    check_same(zoo.load(base), model)
    check_same(zoo.load(f"file://{base}"), model)
    check_same(zoo.load(f"file://{tarball}"), model)


def test_http_tarball_is_cached_and_checked(exported, http_root):
    model, _, tarball = exported
    url, server = http_root
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    check_same(zoo.load(f"{url}/ganem.tar.gz#sha256={digest}"), model)
    entries = list((zoo.cache.cache_dir() / "hub").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    with pytest.raises(hub.HubError, match="checksum mismatch"):
        zoo.load(f"{url}/ganem.tar.gz#sha256={'0' * 64}")
    assert len(list((zoo.cache.cache_dir() / "hub").iterdir())) == 1  # nothing added by the failure


def test_a_broken_download_never_poisons_the_cache(http_root, exported):
    url, _ = http_root
    _, _, tarball = exported
    digest = hashlib.sha256(tarball.read_bytes()[: tarball.stat().st_size // 2]).hexdigest()
    for _ in range(2):  # the second attempt must fail the same way, not find a bad cache entry
        with pytest.raises(hub.HubError, match="not a readable .tar.gz"):
            zoo.load(f"{url}/broken.tar.gz#sha256={digest}")
    assert not list((zoo.cache.cache_dir() / "hub").iterdir())


def test_remote_handles_need_a_pin_and_every_pin_is_checked(exported, http_root, tmp_path):
    model, _, tarball = exported
    url, _ = http_root
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    with pytest.raises(hub.HubError, match="needs #sha256="):
        zoo.load(f"{url}/ganem.tar.gz")
    with pytest.raises(hub.HubError, match="plain http"):  # an opt-out never covers plain http
        zoo.load(f"{url}/ganem.tar.gz", allow_unpinned=True)
    with pytest.raises(hub.HubError, match="checksum mismatch"):  # the key's case does not matter
        zoo.load(f"{url}/ganem.tar.gz#SHA256={'0' * 64}")
    check_same(zoo.load(f"{url}/ganem.tar.gz#SHA256={digest.upper()}"), model)
    with pytest.raises(hub.HubError, match="64 hex digits"):
        zoo.load(f"{url}/ganem.tar.gz#sha256=abc")
    with pytest.raises(hub.HubError, match="only fragment"):
        zoo.load(f"{url}/ganem.tar.gz#md5=abc")
    # file:// and plain paths of tarballs: the pin is checked too, never dropped.
    for handle in (f"file://{tarball}", str(tarball)):
        with pytest.raises(hub.HubError, match="checksum mismatch"):
            zoo.load(f"{handle}#sha256={'1' * 64}")
        check_same(zoo.load(f"{handle}#sha256={digest}"), model)
    with pytest.raises(hub.HubError, match="not a directory"):
        zoo.load(f"file://{tarball.parent}#sha256={digest}")


def test_the_cache_is_keyed_by_content_and_verified_on_every_hit(exported, tmp_path):
    model, base, _ = exported
    other = GANEM(SHAPE, 3, latent_dim=5, embedding_dim=2, seed=9)
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    tarball = write_hub_tarball(copy, "ganem")
    check_same(zoo.load(f"file://{tarball}"), model)
    # A re-export at the same path is new content: the next load must give the new model.
    shutil.rmtree(copy / "ganem_enet"), shutil.rmtree(copy / "ganem_generator")
    export_servables(other, copy)
    tarball = write_hub_tarball(copy, "ganem")
    check_same(zoo.load(f"file://{tarball}"), other)
    # A damaged cache entry is noticed, thrown away and unpacked again.
    entry = zoo.cache.cache_dir() / "hub" / hashlib.sha256(tarball.read_bytes()).hexdigest()
    victim = next(p for p in entry.rglob("*") if p.is_file() and p.name != hub.MANIFEST and p.stat().st_size > 0)
    victim.write_bytes(b"corrupt" + victim.read_bytes()[7:])
    (entry / "ganem_enet" / "extra.txt").write_text("not from the tarball")
    check_same(zoo.load(f"file://{tarball}"), other)
    assert not (entry / "ganem_enet" / "extra.txt").exists()


def test_only_a_version_both_servables_have_is_loaded(exported, tmp_path):
    model, base, _ = exported
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    # A newer E-net without its generator (an interrupted copy), and a name isdigit() accepts.
    export_servables(GANEM(SHAPE, 3, latent_dim=5, embedding_dim=2, seed=9), tmp_path / "other")
    shutil.copytree(tmp_path / "other" / "ganem_enet" / "1", copy / "ganem_enet" / "7")
    (copy / "ganem_enet" / "\u00b2").mkdir()
    (copy / "ganem_enet" / "\u00b2" / "saved_model.pb").write_bytes(b"")
    check_same(zoo.load(copy), model)  # the version-1 pair, not E-net 7 with generator 1


def _tarball(path, members):
    """A .tar.gz of `members`: (TarInfo fields, data or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _regular(name, data=b"x"):
    return {"name": name}, data


@pytest.mark.parametrize("members, reason", [
    # The PATH_MAX bypass of the data filter: a chain of symlinks, then a hard link through it,
    # then a regular file of the same name. The first link is already refused.
    ([({"name": "a", "type": tarfile.SYMTYPE, "linkname": "."}, None),
      ({"name": "escape", "type": tarfile.LNKTYPE, "linkname": "a/../../outside.txt"}, None),
      _regular("escape", b"overwritten")], "not a regular file"),
    ([({"name": "link", "type": tarfile.LNKTYPE, "linkname": "../outside.txt"}, None)], "not a regular file"),
    ([({"name": "dev", "type": tarfile.CHRTYPE}, None)], "not a regular file"),
    ([({"name": "fifo", "type": tarfile.FIFOTYPE}, None)], "not a regular file"),
    ([_regular("../outside.txt", b"overwritten")], "outside the archive"),
    ([_regular("sub/../../outside.txt", b"overwritten")], "outside the archive"),
    ([_regular("/tmp/outside.txt", b"overwritten")], "absolute name"),
    ([_regular("same"), _regular("same")], "names one path twice"),
    ([_regular("x"), _regular("x/y")], "not a readable|names one path twice"),
])
def test_crafted_tarballs_are_refused_and_write_nothing_outside(tmp_path, members, reason):
    outside = tmp_path / "outside.txt"
    outside.write_text("original")
    (tmp_path / "work").mkdir()
    evil = _tarball(tmp_path / "work" / "evil.tar.gz", members)
    with pytest.raises(hub.HubError, match=reason):
        zoo.load(f"file://{evil}")
    assert outside.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "outside.txt", "work"]
    assert not [p for p in (zoo.cache.cache_dir() / "hub").iterdir()]  # staging removed, no entry


def test_member_count_and_size_are_capped(tmp_path, monkeypatch):
    many = _tarball(tmp_path / "many.tar.gz", [_regular(f"f{i}") for i in range(6)])
    big = _tarball(tmp_path / "big.tar.gz", [_regular("zeros", bytes(1 << 20))])  # 1 MiB of zeros: ~1 KB gzipped
    monkeypatch.setattr(hub, "MAX_MEMBERS", 5)
    with pytest.raises(hub.HubError, match="more than 5 members"):
        zoo.load(f"file://{many}")
    monkeypatch.setattr(hub, "MAX_UNPACKED_BYTES", 64 << 10)
    with pytest.raises(hub.HubError, match="more than 65536 bytes"):
        zoo.load(f"file://{big}")
    monkeypatch.setattr(hub, "MAX_TARBALL_BYTES", 100)
    with pytest.raises(hub.HubError, match="larger than 100 bytes"):
        zoo.load(f"file://{big}")
    assert not list((zoo.cache.cache_dir() / "hub").iterdir())


def test_presets_resolve_to_their_url(exported, http_root, monkeypatch):
    model, _, tarball = exported
    url, _ = http_root
    monkeypatch.setattr(hub, "PRESETS", {})
    hub.register_preset("ganem_digits_test", f"{url}/ganem.tar.gz", hashlib.sha256(tarball.read_bytes()).hexdigest())
    check_same(zoo.load("ganem_digits_test"), model)
    hub.register_preset("unpinned", f"{url}/ganem.tar.gz")
    with pytest.raises(hub.HubError, match="needs #sha256="):
        zoo.load("unpinned")
    with pytest.raises(hub.HubError, match="no preset of that name"):
        zoo.load("no_such_preset")


def test_keras_preset_layout_round_trips(exported, tmp_path):
    model, _, _ = exported
    preset = hub.save_preset(model, tmp_path / "ganem_preset", metadata={"dataset": "unit-test"})
    assert {p.name for p in preset.iterdir()} == {"config.json", "model.weights.h5", "metadata.json"}
    loaded = zoo.load(preset)
    assert isinstance(loaded, GANEM)
    check_same(loaded, model)
    with pytest.raises(hub.HubError, match="never overwritten"):
        hub.save_preset(model, preset)
