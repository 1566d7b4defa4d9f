"""Overlay pictures: the radiograph, the saliency heat map, the lung contour and the prediction in a corner.

Drawn with matplotlib rather than MONAI's ``blend_images``: the picture also needs a contour and a text label,
and a heat map whose opacity follows the saliency, so that unimportant regions show the plain radiograph.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

__all__ = ["resize_2d", "save_overlay"]


def resize_2d(array: np.ndarray | torch.Tensor, shape: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a 2D array to ``shape`` (rows, cols); ``bilinear``/``area`` for maps, ``nearest`` for masks."""
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
    if tuple(t.shape[2:]) == tuple(shape):
        return t[0, 0].numpy()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, **kwargs)[0, 0].numpy()


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
            0.015 * shape[1], 0.015 * shape[0], text, color="white", fontsize=max(7, shape[0] / 40), va="top",
            ha="left", family="monospace", bbox={"facecolor": "black", "alpha": 0.65, "pad": 3, "edgecolor": "none"},
        )
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)
