"""Which sample went to which cluster: `assignments.csv` and one contact sheet per cluster.

Written by every training run (for its own data) and by `python -m export.assign` (for new
data), the same way: one CSV row per sample (its path relative to the folder it was read
from, or its index in an array file; the cluster; the confidence, i.e. the posterior of that
cluster; the true label when known) and `clusters/cluster_NN.png`, the most confident
members of each cluster. numpy and Pillow only; files are written aside, then renamed.
"""

import csv
import os
from pathlib import Path

import numpy as np

SHEET_SIDE = 8  # a contact sheet shows up to 8 x 8 members
_MIN_TILE = 48  # small images are enlarged (nearest neighbour) to at least this many pixels


def write_csv(path, clusters, confidence, paths=None, labels=None, class_names=None):
    """assignments.csv: `path` (or `index`), `cluster`, `confidence`[, `label`]; returns the path."""
    path = Path(path)
    clusters = np.asarray(clusters)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["path" if paths is not None else "index", "cluster", "confidence"]
        if labels is not None:
            header.append("label")
        writer.writerow(header)
        for i in range(len(clusters)):
            row = [paths[i] if paths is not None else i, int(clusters[i]), f"{float(confidence[i]):.4f}"]
            if labels is not None:
                row.append(class_names[labels[i]] if class_names else int(labels[i]))
            writer.writerow(row)
    os.replace(tmp, path)
    return path


def members_to_show(clusters, confidence, num_clusters, per_cluster=SHEET_SIDE * SHEET_SIDE):
    """{cluster: indices of its most confident members, most confident first}."""
    clusters, confidence = np.asarray(clusters), np.asarray(confidence)
    shown = {}
    for c in range(num_clusters):
        members = np.flatnonzero(clusters == c)
        if len(members):
            shown[c] = members[np.argsort(-confidence[members], kind="stable")[:per_cluster]]
    return shown


def write_contact_sheets(directory, images_of, shown, num_clusters):
    """clusters/cluster_NN.png for every cluster in `shown` ({cluster: indices}); `images_of(indices)`
    returns those samples as [n, H, W, C] floats in [0, 1]. A sheet left from an earlier write
    for a cluster that is now empty is removed. Returns the paths written."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(num_clusters - 1)))
    written = []
    for c in range(num_clusters):
        target = directory / f"cluster_{c:0{width}d}.png"
        if c not in shown:
            target.unlink(missing_ok=True)
            continue
        sheet = _sheet(np.asarray(images_of(shown[c])))
        tmp = directory / f".{target.name}.tmp"
        Image.fromarray(sheet).save(tmp, format="PNG")
        os.replace(tmp, target)
        written.append(target)
    return written


def _sheet(images):
    """[n, H, W, C] in [0, 1] -> one uint8 grid image, SHEET_SIDE columns, 2-pixel gaps."""
    images = np.clip(images, 0.0, 1.0)
    n, h, w, channels = images.shape
    zoom = max(1, -(-_MIN_TILE // max(h, w)))
    tiles = np.round(images * 255).astype(np.uint8).repeat(zoom, axis=1).repeat(zoom, axis=2)
    h, w, gap = h * zoom, w * zoom, 2
    cols = min(SHEET_SIDE, n)
    rows = -(-n // cols)
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, channels), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = tiles[i]
    return sheet[..., 0] if channels == 1 else sheet
