"""Export versions: both servables of a version appear together or not at all, and the
signatures declare the shapes they take."""

import os

import pytest
from tensorflow.core.protobuf import saved_model_pb2

from export import export_servables, savedmodel
from zoo.ganem import GANEM
from zoo.hub import paired_version_dirs

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def model():
    return GANEM(SHAPE, 3, latent_dim=5, embedding_dim=2, seed=2)


def _signature_shapes(version_dir):
    proto = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    return {name: {key: [d.size for d in spec.tensor_shape.dim] if not spec.tensor_shape.unknown_rank else None
                   for key, spec in signature.inputs.items()}
            for name, signature in proto.meta_graphs[0].signature_def.items() if not name.startswith("__")}


def test_signatures_declare_their_shapes(model, tmp_path):
    paths = export_servables(model, tmp_path)
    assert _signature_shapes(paths["ganem_enet"]) == {"serving_default": {"images": [-1, *SHAPE]},
                                                      "classify": {"inputs": [-1]}}
    assert _signature_shapes(paths["ganem_generator"]) == {"serving_default": {"noise": [-1, 5], "cluster": [-1]},
                                                           "sample": {"cluster": [-1], "seed": []}}


def test_a_failed_second_rename_leaves_neither_version(model, tmp_path, monkeypatch):
    export_servables(model, tmp_path)
    real_rename, calls = os.rename, []

    def failing_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second servable's rename: e.g. the disk filled up
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(savedmodel.os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space"):
        export_servables(model, tmp_path)
    monkeypatch.setattr(savedmodel.os, "rename", real_rename)
    assert sorted(p.name for p in (tmp_path / "ganem_enet").iterdir()) == ["1"]
    assert sorted(p.name for p in (tmp_path / "ganem_generator").iterdir()) == ["1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"
    # The next export takes one number for both, above whatever either servable holds.
    (tmp_path / "ganem_enet" / "4").mkdir()
    paths = export_servables(model, tmp_path)
    assert paths["ganem_enet"].name == paths["ganem_generator"].name == "5"


def test_readers_pair_versions(model, tmp_path):
    export_servables(model, tmp_path)
    export_servables(model, tmp_path)
    # An E-net version without its generator (copied in by hand, cut short) is not offered.
    os.rename(tmp_path / "ganem_generator" / "2", tmp_path / "generator-2-aside")
    assert sorted(paired_version_dirs(tmp_path / "ganem_enet")) == [1]
    assert sorted(paired_version_dirs(tmp_path / "ganem_generator")) == [1]
