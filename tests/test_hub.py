"""zoo.load(handle): local exports, file://, tarballs over HTTP from 127.0.0.1 with the cache and
checksums, presets, and Keras presets in the keras-hub layout."""

import functools
import hashlib
import http.server
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


def test_a_broken_download_never_poisons_the_cache(http_root):
    url, _ = http_root
    for _ in range(2):  # the second attempt must fail the same way, not find a bad cache entry
        with pytest.raises(hub.HubError, match="not a readable .tar.gz"):
            zoo.load(f"{url}/broken.tar.gz")
    assert not list((zoo.cache.cache_dir() / "hub").iterdir())


def test_presets_resolve_to_their_url(exported, http_root, monkeypatch):
    model, _, tarball = exported
    url, _ = http_root
    monkeypatch.setattr(hub, "PRESETS", {})
    hub.register_preset("ganem_digits_test", f"{url}/ganem.tar.gz", hashlib.sha256(tarball.read_bytes()).hexdigest())
    check_same(zoo.load("ganem_digits_test"), model)
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
