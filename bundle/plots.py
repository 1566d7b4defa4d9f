"""PNG plots of an evaluation: ROC curves and the confusion matrix."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import roc_curve  # noqa: E402

__all__ = ["plot_roc", "plot_confusion"]


def plot_roc(
    prob: np.ndarray, truth_onehot: np.ndarray, class_names: Sequence[str], aucs: Sequence[float], path: str
) -> str:
    """One-vs-rest ROC curve per class, AUC in the legend; returns ``path``."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for k, name in enumerate(class_names):
        if truth_onehot[:, k].min() == truth_onehot[:, k].max():
            continue
        fpr, tpr = roc_curve(prob[:, k], truth_onehot[:, k])
        ax.plot(fpr, tpr, label=f"{name} (AUC {aucs[k]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (one vs rest)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
