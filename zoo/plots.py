"""PNG figures a run leaves behind: generated samples per cluster, the confusion
matrix of clusters against classes, and 2-D scatter plots."""

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sample_grid(samples, path, title=None):
    """samples [K, n, H, W, C] in [0, 1] -> one row per cluster, n columns."""
    samples = np.clip(np.asarray(samples), 0.0, 1.0)
    rows, cols = samples.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            image = samples[r, c]
            ax = axes[r, c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(str(r), rotation=0, labelpad=10, va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def grid_image(samples):
    """samples [K, n, H, W, C] -> one [K*H, n*W, C] array (for TensorBoard)."""
    k, n, h, w, c = samples.shape
    return np.asarray(samples).transpose(0, 2, 1, 3, 4).reshape(k * h, n * w, c)


def confusion_png(y_true, y_pred, num_clusters, path, title=None, class_names=None):
    """Clusters (rows, ordered by their Hungarian-matched class) against true classes
    (columns, labelled with `class_names` when the data name their classes)."""
    from zoo import metrics

    matrix = metrics.confusion_matrix(y_true, y_pred, num_clusters)
    mapping = metrics.cluster_to_class_mapping(y_true, y_pred)
    order = sorted(range(num_clusters), key=lambda k: (mapping.get(k, matrix.shape[1]), k))
    matrix = matrix[order]
    fig, ax = plt.subplots(figsize=(0.5 * matrix.shape[1] + 2, 0.4 * num_clusters + 1.5))
    ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    if class_names is not None and len(class_names) == matrix.shape[1]:
        ax.set_xticks(range(matrix.shape[1]), [str(n) for n in class_names], rotation=45, ha="right")
    else:
        ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(num_clusters), [str(k) for k in order])
    ax.set_xlabel("true class")
    ax.set_ylabel("cluster")
    ax.set_title(title or "clusters vs classes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def scatter_png(points, colours, path, title=None, legend_title=None):
    """points [N, 2] coloured by integer `colours` [N]."""
    points = np.asarray(points)
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab20" if np.max(colours) >= 10 else "tab10",
                    s=4, alpha=0.7)
    ax.legend(*sc.legend_elements(), title=legend_title, loc="best", fontsize=7, markerscale=0.8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curve_png(xs, series, path, xlabel, title=None):
    """One line per named series {label: [y per x]} against `xs` (e.g. GM-GAN's quality
    and diversity against the sampling scale s)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_xticks(list(xs))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _finish_axes(fig, ax, path, title)


def time_curves_png(series, path, xlabel, ylabel, title=None, levels=None):
    """Curves with their own x values, {label: (xs, ys)} (e.g. ACC against wall time of
    several runs), and horizontal reference lines {label: y} (e.g. classical baselines)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=".", label=label)
    for i, (label, y) in enumerate((levels or {}).items()):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{(len(series) + i) % 10}", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    _finish_axes(fig, ax, path, title)


def scatter_panels_png(panels, colours, path, title=None):
    """Several 2-D scatter plots side by side, [(subtitle, points [N, 2])], all coloured by
    integer `colours` [N] (e.g. KM-GAN's D features during training, PCA to 2-D)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    cmap = "tab20" if np.max(colours) >= 10 else "tab10"
    for ax, (subtitle, points) in zip(axes[0], panels):
        points = np.asarray(points)
        ax.scatter(points[:, 0], points[:, 1], c=colours, cmap=cmap, s=3, alpha=0.6)
        ax.set_title(subtitle, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def class_histogram_png(histograms, path, title=None, labels=None):
    """Bars of the class frequencies of generated samples, as a reference classifier judged
    them: `histograms` [runs, classes] (one run: [classes]); with several runs, the mean
    and the std over runs as error bars, and the uniform frequency as a dashed line."""
    histograms = np.atleast_2d(np.asarray(histograms, dtype=float))
    classes = histograms.shape[1]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * classes + 1.5), 3.0))
    std = histograms.std(0) if len(histograms) > 1 else None
    ax.bar(np.arange(classes), histograms.mean(0), yerr=std, capsize=3, color="tab:blue")
    ax.axhline(1.0 / classes, color="grey", linestyle="--", linewidth=1, label="uniform")
    ax.set_xticks(np.arange(classes), labels if labels is not None else [str(i) for i in range(classes)])
    ax.set_xlabel("class (reference classifier)")
    ax.set_ylabel("share of generated samples")
    ax.legend(loc="upper right", fontsize=8)
    _finish_axes(fig, ax, path, title)


def _finish_axes(fig, ax, path, title):
    """Title, layout, PNG at 90 dpi, figure closed: the ending of the one-axes figures."""
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
