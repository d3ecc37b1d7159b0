"""Clustering a user's own images end to end: every trainer on unlabelled folders and
arrays, labelled class folders, assignments.csv and contact sheets, the assign command,
and a console free of TensorFlow's log lines."""

import csv
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

# Bounded runs: a handful of steps of every phase of each trainer's schedule.
TRAINERS = {
    "ganem": ["--first-m-steps", "2", "--m-steps", "2", "--e-steps", "1", "--iterations", "2"],
    "clustergan": ["--iterations", "2", "--n-critic", "1", "--init", "kmeans"],
    "gmgan": ["--iterations", "2", "--enet-every", "1", "--final-enet-steps", "1", "--init", "kmeans"],
    "kmgan": ["--iterations", "3", "--init-samples", "24", "--init-restarts", "1", "--init", "kmeans"],
}


def _images(n, seed=0):
    """n 8x8 grey images (MLP networks), two visibly different kinds."""
    rng = np.random.RandomState(seed)
    x = (rng.rand(n, 8, 8) * 120).astype(np.uint8)
    x[1::2, :4] += 130
    return x


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("flat")
    for i, image in enumerate(_images(24)):
        Image.fromarray(image).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def unlabelled_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "mine.npz"
    np.savez(path, x=_images(24, seed=1))
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train(trainer, dataset, run_dir, *extra):
    module = importlib.import_module(f"trainers.{trainer}")
    argv = ["--dataset", str(dataset), "--clusters", "3", "--batch-size", "8", "--max-steps", "4", "--quiet",
            "--run-dir", str(run_dir), *TRAINERS[trainer], *extra]
    assert module.main(argv) == 0
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_every_trainer_clusters_an_unlabelled_folder_and_array(trainer, flat_folder, unlabelled_npz, tmp_path,
                                                              capsys):
    for source, dataset in (("folder", flat_folder), ("npz", unlabelled_npz)):
        run_dir = tmp_path / source
        metrics = train(trainer, dataset, run_dir)
        out = capsys.readouterr().out
        assert "labels unknown, cluster sizes" in out and "assignments.csv" in out
        assert metrics["labels_known"] is False and "acc" not in metrics
        assert sum(metrics["cluster_sizes"]) == 24 and len(metrics["cluster_sizes"]) == 3
        for kind in ("enet", "generator"):
            assert (run_dir / "export" / f"{trainer}_{kind}" / "1" / "saved_model.pb").exists()
        rows = read_csv(run_dir / "assignments.csv")
        assert len(rows) == 24 and "label" not in rows[0]
        first = "path" if source == "folder" else "index"
        assert [r[first] for r in rows[:2]] == (["img00.png", "img01.png"] if source == "folder" else ["0", "1"])
        assert np.bincount([int(r["cluster"]) for r in rows], minlength=3).tolist() == metrics["cluster_sizes"]
        assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
        sheets = sorted(p.name for p in (run_dir / "clusters").glob("*.png"))
        assert sheets == [f"cluster_{c:02d}.png" for c, size in enumerate(metrics["cluster_sizes"]) if size]


def _class_folder(root, classes=("cat", "ant", "bee"), per_class=6):
    from PIL import Image

    images = _images(per_class * len(classes), seed=2)
    for c, name in enumerate(classes):
        (root / name / "deeper").mkdir(parents=True)
        for i in range(per_class):
            where = root / name / ("deeper" if i == 0 else "")
            Image.fromarray(images[c * per_class + i]).save(where / f"{name}{i}.png")
    return root


def test_class_folders_are_labelled_in_sorted_order_and_named_everywhere(tmp_path, capsys):
    from zoo.data import load_dataset

    folder = _class_folder(tmp_path / "pets")
    dataset = load_dataset(str(folder))
    assert dataset.class_names == ["ant", "bee", "cat"] and dataset.num_classes == 3
    assert dataset.paths[0] == os.path.join("ant", "ant1.png")
    assert os.path.join("ant", "deeper", "ant0.png") in dataset.paths
    assert dataset.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6

    run_dir = tmp_path / "run"
    metrics = train("ganem", folder, run_dir, "--no-export")
    assert "ACC" in capsys.readouterr().out
    assert metrics["labels_known"] is True and metrics["class_names"] == ["ant", "bee", "cat"]
    assert 0.0 <= metrics["acc"] <= 1.0 and (run_dir / "confusion.png").stat().st_size > 0
    rows = read_csv(run_dir / "assignments.csv")
    assert {r["label"] for r in rows} == {"ant", "bee", "cat"}
    assert rows[0]["path"] == os.path.join("ant", "ant1.png") and rows[0]["label"] == "ant"


def test_the_assign_command_matches_the_run_and_reads_new_images(flat_folder, unlabelled_npz, tmp_path):
    """Also the console: a healthy run and the assign command print no TensorFlow log lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run_dir = tmp_path / "run"
    train_cmd = [sys.executable, "-m", "trainers.ganem", "--dataset", str(flat_folder), "--clusters", "3",
                 "--batch-size", "8", "--max-steps", "4", "--quiet", "--run-dir", str(run_dir), *TRAINERS["ganem"]]
    result = subprocess.run(train_cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    noisy = [line for line in result.stderr.splitlines() if line.startswith(("I0000", "W0000", "E0000"))]
    assert not noisy, noisy

    out = tmp_path / "again.csv"
    assign = [sys.executable, "-m", "export.assign", "--run", str(run_dir), "--dataset", str(flat_folder),
              "--out", str(out), "--sheets", str(tmp_path / "sheets")]
    result = subprocess.run(assign, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [line for line in result.stderr.splitlines() if line.startswith(("I0000", "W0000", "E0000"))]
    original = read_csv(run_dir / "assignments.csv")
    again = read_csv(out)
    assert [(r["path"], r["cluster"]) for r in again] == [(r["path"], r["cluster"]) for r in original]
    assert list((tmp_path / "sheets").glob("cluster_*.png"))

    from export.assign import cli

    # New data from the export (no server), with labels from a file.
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["odd", "even"] * 12) + "\n")
    out = tmp_path / "npz.csv"
    assert cli(["--model", str(run_dir / "export"), "--dataset", str(unlabelled_npz), "--labels-file", str(labels),
                "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 24 and rows[0]["index"] == "0" and rows[0]["label"] == "odd"


@pytest.mark.parametrize("argv, expected", [
    (["--run", "{tmp}/missing", "--dataset", "{flat}"], "no such directory"),
    (["--run", "{tmp}", "--dataset", "{flat}"], "not a run directory"),
    (["--run", "{tmp}", "--dataset", "{tmp}/nothing.npz"], "unknown dataset"),
    (["--run", "{tmp}", "--dataset", "{flat}", "--out", "{tmp}/no/such/dir/a.csv"], "does not exist"),
])
def test_assign_errors_are_one_line_with_exit_code_2(argv, expected, flat_folder, tmp_path, capsys):
    from export.assign import cli

    argv = [a.format(tmp=tmp_path, flat=flat_folder) for a in argv]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_assign_refuses_data_of_another_shape(tmp_path, capsys):
    from export.assign import cli

    run_dir = tmp_path / "run"
    np.savez(tmp_path / "small.npz", x=_images(24))
    train("kmgan", tmp_path / "small.npz", run_dir, "--no-export")  # assigns from the checkpoint
    np.savez(tmp_path / "other.npz", x=np.zeros((4, 6, 6), np.uint8))
    capsys.readouterr()
    assert cli(["--run", str(run_dir), "--dataset", str(tmp_path / "other.npz"), "--out", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(6, 6, 1)" in err[0] and "(8, 8, 1)" in err[0]


# --------------------------------------------------------------------------- larger than memory

def test_a_folder_over_the_memory_budget_stays_on_disk_and_reads_the_same(flat_folder):
    import tensorflow as tf

    from trainers import common
    from zoo.data import DiskPixels, load_dataset

    in_memory = load_dataset(str(flat_folder))
    on_disk = load_dataset(str(flat_folder), memory_budget=0)
    assert in_memory.data.dtype == np.uint8 and not in_memory.streamed
    assert isinstance(on_disk.data, DiskPixels) and on_disk.streamed and on_disk.paths == in_memory.paths
    assert on_disk.input_shape == in_memory.input_shape == (8, 8, 1) and len(on_disk) == 24
    rows = [5, 2, 3, 4, 23]
    np.testing.assert_array_equal(on_disk.take(rows), in_memory.take(rows))
    assert in_memory.take(rows).dtype == np.float32 and in_memory.take(rows).max() <= 1.0
    with pytest.raises(Exception, match="memory budget"):
        on_disk.x  # noqa: B018
    # Decoded once: a second load finds the pixels and their shape in the cache.
    again = load_dataset(str(flat_folder), memory_budget=0)
    assert again.data.path == on_disk.data.path and again.input_shape == on_disk.input_shape
    part = on_disk.subset([7, 3, 9])
    assert isinstance(part, DiskPixels) and part.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(part.read([2, 0]), in_memory.subset([7, 3, 9])[[2, 0]])

    mean = tf.function(lambda x: tf.reduce_mean(x, axis=[1, 2]))
    np.testing.assert_array_equal(common.predict_in_batches(mean, on_disk.data, batch_size=7),
                                  common.predict_in_batches(mean, in_memory.data, batch_size=7))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    w = np.arange(48, dtype=np.float32).reshape(24, 2)
    streamed = next(common.distributed_batches(strategy, (on_disk.data, w), 8, seed=3))
    held = next(common.distributed_batches(strategy, (in_memory.data, w), 8, seed=3))
    for a, b in zip(streamed, held):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert streamed[0].dtype == tf.float32


def test_a_run_and_assign_over_the_memory_budget(flat_folder, tmp_path, capsys):
    from export.assign import cli

    run_dir = tmp_path / "run"
    metrics = train("ganem", flat_folder, run_dir, "--memory-budget", "0")
    assert metrics["labels_known"] is False and len(read_csv(run_dir / "assignments.csv")) == 24
    config = json.loads((run_dir / "config.json").read_text())
    # No GMM on a set on disk, so nothing confident to pseudo-label, and no UMAP of its features.
    assert (config["init"], config["pseudo_labels"], config["recluster"]) == ("uniform", 0.0, "none")
    out = tmp_path / "a.csv"
    assert cli(["--run", str(run_dir), "--dataset", str(flat_folder), "--memory-budget", "0", "--out", str(out)]) == 0
    assert [r["cluster"] for r in read_csv(out)] == [r["cluster"] for r in read_csv(run_dir / "assignments.csv")]
