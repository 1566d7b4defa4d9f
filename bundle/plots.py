"""Every picture the bundle writes: overlays, ROC curves, the confusion matrix and reconstruction grids.

Overlays are drawn with matplotlib rather than MONAI's ``blend_images``: the picture also needs a contour and a
text label, and a heat map whose opacity follows the saliency, so that unimportant regions show the plain
radiograph. This is the only module that imports matplotlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .atomic import atomic_write  # noqa: E402
from .data.transforms import resize_2d  # noqa: E402

__all__ = [
    "attention_caption",
    "save_overlay",
    "plot_roc",
    "plot_confusion",
    "plot_reconstructions",
    "plot_label_efficiency",
    "plot_cascade",
]


def _save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: float | None = None) -> None:
    """Write ``fig`` through ``atomic_write`` (its format from the extension) and close it, whatever happens.

    A full disk or an unwritable folder ends in one message naming the picture; matplotlib's own ``savefig``
    would leave a torn file and raise a bare ``OSError``.
    """
    try:
        fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
        with atomic_write(path, what="the picture") as f:
            fig.savefig(f, format=fmt, **({"dpi": dpi} if dpi is not None else {}))
    finally:
        plt.close(fig)


def attention_caption(attention: float | None, share: float | None) -> str:
    """Overlay text for a lung attention and its chance level: ``"lung attention 0.46\n(lung share 0.29, 1.6x)"``.

    Two lines (three with ``"mostly outside the lungs"`` for a ratio below 1), so that it fits the 224-pixel
    overlays of an evaluation; ``""`` when the attention is undefined (None or NaN).
    """
    if attention is None or math.isnan(attention):
        return ""
    text = f"lung attention {attention:.2f}"
    if share is None or math.isnan(share):
        return text
    if share <= 0:
        return f"{text}\n(no lung in the mask)"
    ratio = attention / share
    return f"{text}\n(lung share {share:.2f}, {ratio:.1f}x)" + ("\nmostly outside the lungs" if ratio < 1 else "")


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    saliency: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    text: str = "",
    max_size: int = 1024,
    cmap: str = "jet",
    alpha: float = 0.6,
) -> str:
    """Write a PNG of ``image`` (rows, cols) in [0, 1] with ``saliency`` and the ``mask`` contour on top.

    Args:
        path: output PNG.
        image: the radiograph, any size; shown in grey.
        saliency: map in [0, 1], any size (resized to the picture); opacity rises with the value.
        mask: lung mask (non-zero = lung), any size; drawn as a contour.
        text: label for the top-left corner (e.g. ``"covid19 0.93"``).
        max_size: longest side of the picture in pixels; larger images are scaled down.
        cmap: matplotlib colour map of the heat map.
        alpha: opacity of the heat map where the saliency is 1.
    Returns:
        ``path`` as a string.
    """
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape
    scale = min(1.0, max_size / max(rows, cols))
    shape = (max(2, round(rows * scale)), max(2, round(cols * scale)))
    image = resize_2d(image, shape, mode="area") if shape != (rows, cols) else image
    dpi = 100
    fig = plt.figure(figsize=(shape[1] / dpi, shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    if saliency is not None:
        heat = np.clip(resize_2d(saliency, shape), 0, 1)
        ax.imshow(heat, cmap=cmap, vmin=0, vmax=1, alpha=alpha * heat, interpolation="bilinear")
    if mask is not None and np.any(mask):
        m = resize_2d((np.asarray(mask) > 0).astype(np.float32), shape, mode="bilinear")
        ax.contour(m, levels=[0.5], colors=["#39ff14"], linewidths=max(1.0, shape[0] / 400))
    if text:
        ax.text(
            0.015 * shape[1],
            0.015 * shape[0],
            text,
            color="white",
            fontsize=max(7, shape[0] / 40),
            va="top",
            ha="left",
            family="monospace",
            bbox={"facecolor": "black", "alpha": 0.65, "pad": 3, "edgecolor": "none"},
        )
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    _save_figure(fig, path, dpi=dpi)
    return str(path)


def plot_roc(
    curves: Sequence[tuple[np.ndarray, np.ndarray] | None],
    class_names: Sequence[str],
    aucs: Sequence[float | None],
    path: str,
    intervals: Sequence[Sequence[float] | None] | None = None,
    support: Sequence[int] | None = None,
    subtitle: str = "",
    confidence: float = 0.95,
) -> str:
    """One-vs-rest ROC curve per class; returns ``path``.

    ``curves[k]`` is class k's (false-positive rates, true-positive rates), or None for a class without both a
    positive and a negative image (no curve; its legend entry says so). The legend gives each class's AUC, its
    ``intervals[k]`` (``(low, high)`` at ``confidence``, None: none) and ``support[k]`` (its positive images), e.g.
    ``covid19: AUC 0.97 (95% CI 0.93-1.00), n=8``; ``subtitle`` (e.g. the macro AUC and its interval) goes under
    the title. The legend sits under the axes, so that it hides no curve.
    """
    # constrained layout keeps the two-line title and the legend under the axes inside the picture
    fig, ax = plt.subplots(figsize=(6, 5.6 + 0.2 * len(class_names)), dpi=120, layout="constrained")
    for k, (curve, name) in enumerate(zip(curves, class_names)):
        auc = aucs[k]
        interval = intervals[k] if intervals is not None else None
        label = f"{name}: " + (
            "no curve (needs positive and negative images)"
            if curve is None or auc is None or math.isnan(auc)
            else f"AUC {auc:.2f}" + (f" ({confidence:.0%} CI {interval[0]:.2f}-{interval[1]:.2f})" if interval else "")
        )
        label += f", n={support[k]}" if support is not None else ""
        if curve is None:
            ax.plot([], [], " ", label=label)  # an entry without a line: the class is still listed
        else:
            ax.plot(*curve, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title("ROC (one vs rest)" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower left", fontsize=8, frameon=False)
    _save_figure(fig, path)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str) -> str:
    """Confusion matrix (rows: truth, columns: prediction) with counts; returns ``path``."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.2 * len(class_names) + 2), dpi=120)
    ax.imshow(m, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def plot_reconstructions(
    masked: torch.Tensor, recon: torch.Tensor, original: torch.Tensor, path: str, title: str = ""
) -> str:
    """PNG grid, one row per image: masked input | reconstruction | original (first channel, [0, 1] scale)."""
    rows = masked.shape[0]
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), dpi=100, squeeze=False)
    for i in range(rows):
        columns = (("masked input", masked), ("reconstruction", recon), ("original", original))
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(images[i, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def plot_label_efficiency(
    curves: dict[str, dict[str, Sequence[float]]], metric: str, path: str, title: str = ""
) -> str:
    """Metric against label fraction (log x), one line per initialisation with its interval as a band.

    ``curves`` maps a name to ``{"fraction", "mean", "low", "high"}`` lists of equal length; NaN points are not
    drawn (a band only where both ends are defined). Returns ``path``.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for name, c in curves.items():
        x, mean = np.asarray(c["fraction"], float), np.asarray(c["mean"], float)
        low, high = np.asarray(c["low"], float), np.asarray(c["high"], float)
        shown = ~np.isnan(mean)
        if not shown.any():
            continue
        (line,) = ax.plot(x[shown], mean[shown], marker="o", label=name)
        band = shown & ~np.isnan(low) & ~np.isnan(high)
        if band.any():
            ax.fill_between(x[band], low[band], high[band], color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    fractions = sorted({f for c in curves.values() for f in c["fraction"]})
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set(xlabel="label fraction (log scale)", ylabel=metric, title=title or f"{metric} against label fraction")
    ax.grid(True, which="major", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def plot_cascade(result: dict, path: str) -> str:
    """Similarity of the maps to the trained ones, step by step of a cascading randomisation (the result of
    ``bundle.evaluation.sanity.cascading_randomization``); returns ``path``."""
    steps = result["steps"]
    x = range(len(steps))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(steps)), 3.6))
    for key, label in (("spearman", "Spearman rank correlation"), ("ssim", "SSIM")):
        mean = np.array([s[f"{key}_mean"] for s in steps])
        std = np.array([s[f"{key}_std"] for s in steps])
        ax.plot(x, mean, marker="o", label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.axhline(result["max_correlation"], color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(list(x), ["trained"] + [s["step"].replace("encoder.", "") for s in steps[1:]], rotation=30)
    ax.set_ylim(-0.2, 1.05)
    ax.set_ylabel("similarity to the trained maps")
    ax.set_title(f"{result['method']} on {result['saliency_layer']}: cascading randomisation", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path, dpi=100)
    return path
