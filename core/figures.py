"""Matplotlib figures with one style; every figure has a title, axis labels and units."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
}
plt.rcParams.update(STYLE)


def gan_loss_curves(history: Mapping[str, Sequence[float]], title: str = "DCGAN losses", window: int | None = None):
    """D and G loss per epoch: the epoch mean (solid) and the last batch's value (dotted; what the paper
    plotted). Labels are the right way round — the paper's own figures swap D and G."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _draw_gan_losses(ax, history, title, window)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _draw_gan_losses(ax, history: Mapping[str, Sequence[float]], title: str, window: int | None) -> None:
    epochs = np.arange(1, len(history["g_loss_epoch"]) + 1)
    for net, colour in (("d", "tab:blue"), ("g", "tab:orange")):
        name = "discriminator (D)" if net == "d" else "generator (G)"
        ax.plot(
            epochs,
            history[f"{net}_loss_epoch"],
            color=colour,
            marker="." if len(epochs) < 20 else None,
            label=f"{name}, epoch mean",
        )
        ax.plot(
            epochs, history[f"{net}_loss_last"], color=colour, linestyle=":", alpha=0.8, label=f"{name}, last batch"
        )
    if window and len(epochs) > 1:
        ax.axvspan(
            max(1, len(epochs) - window + 1),
            len(epochs),
            color="grey",
            alpha=0.12,
            label=f"fluctuation window ({window} epochs)",
        )
    ax.set(title=title, xlabel="epoch", ylabel="loss (sigmoid cross-entropy, nats)")
    if len(epochs) <= 10:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def gan_loss_comparison(histories: Mapping[str, Mapping[str, Sequence[float]]], window: int | None = None):
    """Several DCGAN runs' D and G loss curves side by side on one loss scale (the paper's comparison)."""
    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.6), sharey=True, squeeze=False)
    for ax, (name, history) in zip(axes[0], histories.items()):
        _draw_gan_losses(ax, history, name, window)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=2 if len(histories) == 1 else len(labels), fontsize=7, frameon=False
    )
    fig.suptitle("D and G loss per epoch, experiments side by side")
    fig.tight_layout(rect=(0, 0.14 if len(histories) == 1 else 0.08, 1, 1))
    return fig


def sweep_heatmap(
    table,
    metric: str,
    rows: str = "data.batch_size",
    cols: str = "model.lr",
    title: str = "Sweep",
    metric_label: str | None = None,
    lower_is_better: bool = True,
    row_label: str = "batch size, images",
    col_label: str = "learning rate",
):
    """A metric over a two-parameter grid, values written in the cells: one cell per pair of `rows` and `cols`
    values, holding the best run of that pair (lowest when `lower_is_better`, else highest) where a cell has several
    (the sweep's other axes, or repeats). `table` is a DataFrame with columns `rows`, `cols` and `metric`
    (mlflow_runs.sweep_table); the axes are labelled "<label> (<key>)"."""
    best = "min" if lower_is_better else "max"
    grid = table.pivot_table(index=rows, columns=cols, values=metric, aggfunc=best).sort_index().sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * grid.shape[1], 1.4 + 0.8 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(), cmap="viridis_r" if lower_is_better else "viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    ax.grid(False)
    middle = np.nanmean(grid.to_numpy())
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(value):
            ax.text(
                j,
                i,
                f"{value:.3g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if (value > middle) == lower_is_better else "black",
            )
    direction = "lower is better" if lower_is_better else "higher is better"
    fig.colorbar(image, ax=ax, label=f"{metric_label or metric} ({direction})")
    ax.set(title=title, xlabel=f"{col_label} ({cols})", ylabel=f"{row_label} ({rows})")
    fig.tight_layout()
    return fig


def metric_curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str):
    """Line plot of named (x, y) series on one axis, e.g. validation mAP or the loss terms per epoch."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="." if len(x) < 20 else None, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix", normalise: bool = True
):
    """Rows are true classes, columns predicted; cells hold the row fraction (`normalise`) or image counts."""
    counts = np.asarray(matrix, dtype=float)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    size = 2.2 + 0.45 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.grid(False)
    if len(class_names) <= 20:
        for (i, j), value in np.ndenumerate(shown):
            ax.text(
                j,
                i,
                f"{value:.2f}" if normalise else f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.5 * shown.max() else "black",
            )
    fig.colorbar(image, ax=ax, label="fraction of the true class's images" if normalise else "images")
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    fig.tight_layout()
    return fig


def image_panel(images: Mapping[str, np.ndarray], title: str, columns: int = 3):
    """RGB images side by side, each titled (sample grids, prediction screenshots); pixel axes hidden."""
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image) in zip(axes.flat, images.items()):
        ax.imshow(image)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def face_detector_comparison(
    rows: Sequence[Mapping[str, float]],
    iou_thresholds: Sequence[float],
    classes: Sequence[str],
    title: str = "Face detectors",
):
    """Per detector: precision and recall at each IoU threshold, recall per ground-truth class at the
    strictest one, and images per second (log scale). `rows` need a 'detector' key and `faces.evaluation.scores`' keys."""
    names = [row["detector"] for row in rows]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 2, 1.2]})
    bars = [(f"{kind}@{t}", f"{kind} (IoU ≥ {t})") for t in iou_thresholds for kind in ("precision", "recall")]
    width = 0.8 / len(bars)
    for k, (key, label) in enumerate(bars):
        axes[0].bar(x + (k - (len(bars) - 1) / 2) * width, [row[key] for row in rows], width, label=label)
    strict = max(iou_thresholds)
    width = 0.8 / max(1, len(classes))
    for k, name in enumerate(classes):
        axes[1].bar(
            x + (k - (len(classes) - 1) / 2) * width,
            [row[f"recall_{name}@{strict}"] for row in rows],
            width,
            label=name,
        )
    axes[2].bar(x, [row["images_per_s"] for row in rows], color="tab:grey")
    axes[2].set_yscale("log")
    axes[0].set(title="precision and recall", ylabel="fraction of detections / of faces", ylim=(0, 1.05))
    axes[1].set(title=f"recall per class (IoU ≥ {strict})", ylabel="fraction of faces found", ylim=(0, 1.05))
    axes[2].set(title="speed (one process)", ylabel="images per second (log scale)")
    for ax in axes:
        ax.set_xticks(x, names)
        ax.set_xlabel("detector")
    axes[0].legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    if classes:
        axes[1].legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def recall_vs_rotation(
    angles: Sequence[float],
    recalls: Mapping[str, Sequence[float]],
    iou_threshold: float,
    title: str = "Face recall against in-plane rotation",
):
    """One line per detector: the fraction of faces found at each rotation angle."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in recalls.items():
        ax.plot(angles, values, marker="o", label=name)
    ax.set(
        title=title,
        xlabel="in-plane rotation of the card (degrees)",
        ylabel=f"recall (IoU ≥ {iou_threshold})",
        ylim=(-0.03, 1.05),
        xticks=list(angles),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_curve(
    fpr: Sequence[float],
    tpr: Sequence[float],
    title: str,
    points: Mapping[str, tuple[float, float]] | None = None,
    zoom: float = 0.1,
):
    """A verification ROC curve: true-positive rate (same pairs accepted) against false-positive rate (different
    pairs accepted), both fractions 0–1, in full (left) and zoomed into the top-left corner (right: fpr ≤ `zoom`,
    tpr ≥ 1 − `zoom`); `points` marks operating points, e.g. {"tolerance 0.6": (fpr, tpr)}."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, zoomed in zip(axes, (False, True)):
        ax.plot(fpr, tpr, color="tab:blue", drawstyle="steps-post", label="ROC")
        for (label, (x, y)), marker in zip((points or {}).items(), "osD^v"):
            ax.plot([x], [y], marker=marker, linestyle="none", label=f"{label} (fpr {x:.3f}, tpr {y:.3f})")
        limits = ((0, zoom), (1 - zoom, 1.002)) if zoomed else ((0, 1), (0, 1.02))
        ax.set(
            xlim=limits[0],
            ylim=limits[1],
            xlabel="false-positive rate (different pairs called same)",
            ylabel="true-positive rate (same pairs called same)",
            title="top-left corner" if zoomed else "full range",
        )
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def zone_occupancy(per_minute: Mapping[str, Sequence[Mapping[str, float]]]):
    """Per zone of the entrance monitor, by minute of source time: the people inside (bars, left axis) and the masked
    share of them (line, right axis, 0–1). `per_minute`: {zone: [{"minute", "people", "masked_share"}, …]}."""
    names = list(per_minute)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = per_minute[name]
        minutes = [row["minute"] for row in rows]
        ax.bar(minutes, [row["people"] for row in rows], color="tab:blue", alpha=0.6, label="people")
        ax.set(title=f"zone {name}", xlabel="minute of the video", ylabel="people inside")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        share = ax.twinx()
        share.plot(minutes, [row["masked_share"] for row in rows], color="tab:green", marker="o", label="masked share")
        share.set(ylim=(0, 1.05), ylabel="masked share of people")
        share.grid(False)
    if not names:
        axes[0][0].set(title="no zone", xlabel="minute of the video", ylabel="people inside")
    fig.tight_layout()
    return fig


def save_figure(figure, path) -> None:
    """Write `figure` to `path` (format from its suffix) and free it."""
    figure.savefig(path)
    plt.close(figure)
