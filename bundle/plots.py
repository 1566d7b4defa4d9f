"""Every picture the bundle writes: overlays, ROC curves, confusion matrix, training curves, reconstruction grids.

Overlays are drawn with matplotlib rather than MONAI's ``blend_images``: the picture also needs a contour, a
caption band, a colour bar and a heat map whose opacity follows the saliency, so that unimportant regions show the
plain radiograph. This is the only module that imports matplotlib.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import Colormap, ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from .atomic import atomic_write  # noqa: E402
from .data.transforms import resize_2d  # noqa: E402

__all__ = [
    "attention_caption",
    "overlay_caption",
    "overlay_shape",
    "heat_rgba",
    "save_overlay",
    "plot_roc",
    "confusion_shares",
    "plot_confusion",
    "plot_training_curves",
    "best_epoch",
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


# Heat-map colours: the upper three quarters of matplotlib's "plasma" (violet, orange, yellow). Perceptually
# uniform (equal steps of saliency look equal, where jet invents bands at cyan and yellow) and ordered for
# colour-blind readers; saturated at every level, so that no value reads as a tissue density on the grey
# radiograph; plasma's dark-blue start is left out, as it would only darken the dark lung fields, and it has no
# white end to vanish on bone.
OVERLAY_CMAP = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.25, 1.0, 256)), name="plasma_upper")
OVERLAY_THRESHOLD = 0.15  # saliency below this is drawn clear: the plain radiograph shows where the map is ~0
OVERLAY_MIN_SIZE, OVERLAY_MAX_SIZE = 512, 1024  # longest side of the radiograph in the picture
CONTOUR_COLOUR = "#39ff14"  # green: apart from every colour of the heat map and from grey
_DPI = 100


def attention_caption(attention: float | None, share: float | None) -> str:
    """Caption of a lung attention and its chance level, e.g. ``"lung attention 0.46, chance (lung share) 0.29:
    1.59x"``, with a second line ``"mostly outside the lungs"`` for a ratio below 1.

    ``""`` when the attention is undefined (None or NaN); without a share, the attention alone.
    """
    if attention is None or math.isnan(attention):
        return ""
    text = f"lung attention {attention:.2f}"
    if share is None or math.isnan(share):
        return text
    if share <= 0:
        return f"{text} (no lung in the mask)"
    ratio = attention / share
    return f"{text}, chance (lung share) {share:.2f}: {ratio:.2f}x" + (
        "\nmostly outside the lungs" if ratio < 1 else ""
    )


def overlay_caption(
    predicted: str,
    probability: float,
    attention: float | None,
    share: float | None,
    true_class: str | None = None,
    mark_wrong: bool = True,
) -> str:
    """The text above an overlay: true class (when known), predicted class and probability, lung attention.

    ``predicted: viral_pneumonia (probability 0.62)`` is preceded by ``true: ...`` when ``true_class`` is given,
    and followed by ``, wrong`` when it differs and ``mark_wrong`` (off for multi-label truths: several findings).
    """
    lines = []
    if true_class is not None:
        lines.append(f"true: {true_class}")
    wrong = mark_wrong and true_class is not None and true_class != predicted
    lines.append(f"predicted: {predicted} (probability {probability:.2f}){', wrong' if wrong else ''}")
    caption = attention_caption(attention, share)
    return "\n".join(lines + ([caption] if caption else []))


def overlay_shape(
    shape: tuple[int, int], min_size: int = OVERLAY_MIN_SIZE, max_size: int = OVERLAY_MAX_SIZE
) -> tuple[int, int]:
    """(rows, cols) of a radiograph of ``shape`` in its overlay: same aspect ratio, longest side scaled up to
    ``min_size`` or down to ``max_size`` (kept in between)."""
    rows, cols = shape
    longest = max(rows, cols)
    scale = min(max(1.0, min_size / longest), max_size / longest)
    return max(2, round(rows * scale)), max(2, round(cols * scale))


def heat_rgba(
    saliency: np.ndarray, cmap: str | Colormap = OVERLAY_CMAP, threshold: float = OVERLAY_THRESHOLD, alpha: float = 0.6
) -> np.ndarray:
    """(rows, cols) saliency in [0, 1] -> (rows, cols, 4) RGBA in [0, 1]: clear up to ``threshold``, above it the
    colour map spread over (``threshold``, 1] and an opacity rising linearly to ``alpha`` at 1, so that a map near
    zero leaves the radiograph as it is and the strongest regions stand out most."""
    s = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float32)), 0, 1)
    ramp = np.clip((s - threshold) / max(1e-6, 1 - threshold), 0, 1)
    rgba = plt.get_cmap(cmap)(ramp)
    rgba[..., 3] = alpha * ramp
    return rgba


def _overlay_layout(shape: tuple[int, int], lines: int, legend: bool) -> dict[str, Any]:
    """Pixel layout of an overlay: caption band (``lines`` lines) above the radiograph of ``shape`` (rows, cols),
    legend band (colour bar, contour) below it when ``legend``; the picture is at least 512 px wide for the text."""
    rows, cols = shape
    width = max(cols, OVERLAY_MIN_SIZE)
    font = float(np.clip(width / 46, 9, 18))  # points; 11 at 512 px wide
    px = font * _DPI / 72
    pad = round(0.6 * px)
    top = round(2 * pad + lines * 1.45 * px) if lines else 0
    bottom = round(2 * pad + 3.6 * px) if legend else 0
    height = top + rows + bottom
    left = (width - cols) // 2
    box = (left / width, bottom / height, cols / width, rows / height)
    return {
        "width": width,
        "height": height,
        "font": font,
        "px": px,
        "pad": pad,
        "top": top,
        "bottom": bottom,
        "box": box,
    }


def _fit_texts(fig: plt.Figure, texts: Sequence[Any], width: float) -> None:
    """Shrink ``texts`` (matplotlib Text, one font size) together until the widest is at most ``width`` pixels."""
    renderer = fig.canvas.get_renderer()
    widest = max((t.get_window_extent(renderer).width for t in texts), default=0.0)
    if widest > width:
        for t in texts:
            t.set_fontsize(t.get_fontsize() * width / widest)


def _draw_caption(fig: plt.Figure, text: str, layout: dict[str, Any]) -> None:
    """The caption band: one line of ``text`` per line, the first bold, left-aligned above the radiograph."""
    w, h, pad = layout["width"], layout["height"], layout["pad"]
    texts = [
        fig.text(
            pad / w,
            1 - (pad + i * 1.45 * layout["px"]) / h,
            line,
            fontsize=layout["font"],
            fontweight="bold" if i == 0 else "normal",
            va="top",
            ha="left",
        )
        for i, line in enumerate(text.splitlines())
    ]
    _fit_texts(fig, texts, w - 2 * pad)


def _draw_legend(
    fig: plt.Figure, layout: dict[str, Any], heat: dict[str, Any] | None, contour: bool, label: str
) -> None:
    """The band below the radiograph: the heat map's colour bar over mid grey (as the overlay shows it, clear below
    the threshold), labelled; and a sample of the lung contour."""
    w, h, pad, px, small = layout["width"], layout["height"], layout["pad"], layout["px"], 0.85 * layout["font"]
    bar_y = layout["bottom"] - pad - 0.9 * px  # top of the band, less the bar's height
    if heat is not None:
        ax = fig.add_axes((pad / w, bar_y / h, 0.62 - pad / w, 0.9 * px / h))
        ax.set_facecolor((0.5, 0.5, 0.5))
        ramp = np.linspace(0, 1, 256)[None]
        ax.imshow(heat_rgba(ramp, heat["cmap"], heat["threshold"], heat["alpha"]), aspect="auto", extent=(0, 1, 0, 1))
        ax.axvline(heat["threshold"], color="black", linewidth=0.8)
        ax.set_yticks([])
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"], fontsize=small)
        ax.tick_params(length=3, pad=2)
        xlabel = ax.set_xlabel(f"{label}, clear below {heat['threshold']:g}", fontsize=small, labelpad=2)
        _fit_texts(fig, [xlabel], 0.62 * w - pad)
    if contour:
        y = (bar_y + 0.45 * px) / h
        fig.add_artist(plt.Line2D([0.67, 0.73], [y, y], color=CONTOUR_COLOUR, linewidth=2.5))
        fig.add_artist(plt.Line2D([0.67, 0.73], [y, y], color="black", linewidth=0.6))
        fig.text(0.745, y, "predicted lung\ncontour", fontsize=small, va="center", ha="left")


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    saliency: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    text: str = "",
    saliency_label: str = "saliency",
    min_size: int = OVERLAY_MIN_SIZE,
    max_size: int = OVERLAY_MAX_SIZE,
    cmap: str | Colormap = OVERLAY_CMAP,
    threshold: float = OVERLAY_THRESHOLD,
    alpha: float = 0.6,
) -> str:
    """Write a PNG of ``image`` (rows, cols) in [0, 1] with ``saliency`` and the ``mask`` contour on top.

    The radiograph keeps its aspect ratio, its longest side scaled into [``min_size``, ``max_size``] pixels;
    ``text`` goes in a band above it (never over it), the colour bar and the contour's legend in a band below.

    Args:
        path: output PNG.
        image: the radiograph (rows, cols), any size; shown in grey.
        saliency: map in [0, 1] (h, w), any size with the image's aspect ratio (resized onto it); clear below
            ``threshold``, opacity rising with the value to ``alpha`` at 1 (``heat_rgba``).
        mask: lung mask (0/1) or lung probability (h, w), any size with the image's aspect ratio; its 0.5 level
            is drawn as a contour (a probability map gives a smoother one than a mask when enlarged).
        text: caption lines (``overlay_caption``), the first in bold.
        saliency_label: name of the map under the colour bar (e.g. ``"saliency (gradcampp)"``).
        min_size, max_size: bounds of the radiograph's longest side in the picture, in pixels.
        cmap: matplotlib colour map of the heat map.
        threshold, alpha: saliency drawn clear up to ``threshold``; opacity at 1.
    Returns:
        ``path`` as a string.
    """
    image = np.asarray(image, dtype=np.float32)
    shape = overlay_shape(image.shape, min_size, max_size)
    picture = np.clip(resize_2d(image, shape, mode="area" if shape[0] < image.shape[0] else "bilinear"), 0, 1)
    contour = mask is not None and bool(np.any(np.asarray(mask) > 0.5))
    layout = _overlay_layout(shape, len(text.splitlines()), saliency is not None or contour)
    fig = plt.figure(figsize=(layout["width"] / _DPI, layout["height"] / _DPI), dpi=_DPI)
    ax = fig.add_axes(layout["box"])
    ax.set_axis_off()
    # one picture pixel per screen pixel ("nearest" at the exact size): the radiograph is not blurred twice
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if saliency is not None:
        ax.imshow(heat_rgba(resize_2d(saliency, shape), cmap, threshold, alpha), interpolation="nearest")
    if contour:
        # a zero border closes the outline of a lung cut by the image's edge
        m = np.pad(resize_2d(np.clip(np.asarray(mask, dtype=np.float32), 0, 1), shape, mode="bilinear"), 1)
        rows, cols = np.arange(-1, shape[0] + 1), np.arange(-1, shape[1] + 1)
        ax.contour(cols, rows, m, levels=[0.5], colors=[CONTOUR_COLOUR], linewidths=max(1.2, shape[0] / 350))
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    if text:
        _draw_caption(fig, text, layout)
    heat = {"cmap": cmap, "threshold": threshold, "alpha": alpha} if saliency is not None else None
    if heat is not None or contour:
        _draw_legend(fig, layout, heat, contour, saliency_label)
    _save_figure(fig, path, dpi=_DPI)
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


def confusion_shares(matrix: Sequence[Sequence[int]]) -> np.ndarray:
    """(K, K) counts (rows: true class) -> (K, K) float row shares, each row summing to 1; NaN for a class without
    images (its row is all zero)."""
    m = np.asarray(matrix, dtype=np.float64)
    totals = m.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, m / np.where(totals > 0, totals, 1), np.nan)


def _class_label(name: str, width: int = 12) -> str:
    """A class name for an axis: underscores as spaces, wrapped at ``width`` characters (``bacterial\npneumonia``)."""
    return textwrap.fill(name.replace("_", " "), width, break_long_words=False) or name


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str) -> str:
    """Confusion matrix (K, K) (rows: true class, columns: predicted) as counts and row shares; returns ``path``.

    Each cell shows its count and its share of the true class's images (``12`` over ``(75%)``), coloured by that
    share, so that classes of different sizes compare; the row labels give each class's image count. A class
    without images has a grey row.
    """
    m = np.asarray(matrix, dtype=np.int64)
    shares, k = confusion_shares(m), len(class_names)
    size = 1.15 * k + 2.8
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=120)
    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("0.85")
    image = ax.imshow(np.ma.masked_invalid(shares), cmap=cmap, vmin=0, vmax=1)
    cell_font = 10 if k <= 6 else 8
    for i in range(k):
        for j in range(k):
            share = "-" if np.isnan(shares[i, j]) else f"{shares[i, j]:.0%}"
            dark = not np.isnan(shares[i, j]) and shares[i, j] > 0.6
            colour = "white" if dark else "black" if m[i, j] else "0.5"  # empty cells recede
            ax.text(j, i, f"{m[i, j]}\n({share})", ha="center", va="center", fontsize=cell_font, color=colour)
    ticks = range(k)
    ax.set_xticks(ticks, [_class_label(c) for c in class_names], fontsize=9)
    ax.set_yticks(ticks, [f"{_class_label(c)}\n(n = {n})" for c, n in zip(class_names, m.sum(1))], fontsize=9)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    ax.set_title("Confusion matrix: rows = true class, columns = predicted\ncount and (share of the row)", fontsize=11)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("share of the true class's images", fontsize=9)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def best_epoch(rows: Sequence[Mapping[str, float]], key: str) -> int | None:
    """The epoch of the highest defined ``key`` in ``rows`` (the first on ties, as the checkpointer keeps it);
    None when no row has a defined value."""
    best, epoch = -math.inf, None
    for row in rows:
        value = float(row.get(key, math.nan))
        if not math.isnan(value) and value > best:
            best, epoch = value, int(row["epoch"])
    return epoch


def _series(rows: Sequence[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``key`` where it is defined: epochs without validation are skipped, not broken lines."""
    pairs = [(int(r["epoch"]), float(r.get(key, math.nan))) for r in rows]
    pairs = [(e, v) for e, v in pairs if not math.isnan(v)]
    return np.array([e for e, _ in pairs], dtype=np.int64), np.array([v for _, v in pairs], dtype=np.float64)


def plot_training_curves(
    rows: Sequence[Mapping[str, float]],
    path: str | os.PathLike,
    key_metric: str = "val_auc",
    metrics: Sequence[tuple[str, str]] = (("val_auc", "AUC"), ("val_accuracy", "accuracy"), ("val_dice", "lung Dice")),
) -> str:
    """Training loss per epoch (left) and the validation metrics per epoch (right), the best epoch by
    ``key_metric`` marked on both; returns ``path``.

    ``rows`` hold ``epoch`` and ``train_loss`` and the ``metrics`` keys (NaN or absent where not measured); each
    of ``metrics`` is (key, legend name).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    marker = "o" if len(rows) <= 30 else None  # points while they can be told apart
    epochs, loss = _series(rows, "train_loss")
    left.plot(epochs, loss, marker=marker, markersize=3, color="tab:red")
    left.set(xlabel="epoch", ylabel="training loss (mean over the epoch)", title="Training loss")
    for key, name in metrics:
        x, y = _series(rows, key)
        if x.size:
            right.plot(x, y, marker=marker, markersize=3, label=f"{name} ({key})")
    right.set(xlabel="epoch", ylabel="validation metric", title="Validation", ylim=(-0.03, 1.05))
    best = best_epoch(rows, key_metric)
    if best is not None:
        value = next(float(r[key_metric]) for r in rows if int(r["epoch"]) == best)
        left.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best} (by {key_metric})")
        right.axvline(best, color="grey", linestyle="--", linewidth=1)
        right.plot([best], [value], "k*", markersize=12, label=f"best: epoch {best}, {key_metric} {value:.3f}")
    last = max((int(r["epoch"]) for r in rows), default=1)
    for ax in (left, right):
        ax.set_xlim(0.5, last + 0.5)  # whole epochs, also for a single one
        if last <= 15:
            ax.set_xticks(range(1, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save_figure(fig, path)
    return os.fspath(path)


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
