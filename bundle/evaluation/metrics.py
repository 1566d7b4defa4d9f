"""Classification and segmentation metrics for a test split: AUC, accuracy, sensitivity, specificity, HM, Dice.

AUC comes from MONAI (``compute_roc_auc``); the rest are confusion-matrix counts, written out here because
MONAI's ConfusionMatrixMetric reports per-image segmentation confusion, not per-class classification.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = ["classification_report", "roc_curve", "harmonic_mean"]


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of two rates (0 when both are 0, NaN when either is NaN)."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _rate(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _auc(prob: np.ndarray, truth: np.ndarray) -> float:
    if truth.min() == truth.max():  # AUC is undefined when a class is absent or everything is that class
        return float("nan")
    return float(compute_roc_auc(torch.as_tensor(prob), torch.as_tensor(truth)))


def roc_curve(prob: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of one class over all thresholds (for plotting)."""
    order = np.argsort(-prob, kind="stable")
    truth = truth[order].astype(bool)
    tps = np.concatenate([[0], np.cumsum(truth)])
    fps = np.concatenate([[0], np.cumsum(~truth)])
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def classification_report(
    prob: np.ndarray, label: np.ndarray, class_names: Sequence[str], multi_label: bool = False
) -> dict:
    """Metrics of class probabilities ``prob`` (N, C) against ``label`` (N,) indices or (N, C) 0/1 findings.

    Returns ``auc_macro``, ``accuracy``, ``sensitivity_macro``, ``specificity_macro``, ``hm`` (their harmonic
    mean), ``confusion_matrix`` (C x C rows = truth; per class [[tn, fp], [fn, tp]] for multi-label) and
    ``per_class`` ``{name: {"auc", "sensitivity", "specificity", "support"}}``.
    """
    prob = np.asarray(prob, dtype=np.float64)
    n, c = prob.shape
    if multi_label:
        truth = np.asarray(label).astype(int).reshape(n, c)
        pred = (prob > 0.5).astype(int)
        accuracy = float((pred == truth).all(1).mean()) if n else float("nan")
        confusion = [
            [
                [
                    int(((pred[:, k] == 0) & (truth[:, k] == 0)).sum()),
                    int(((pred[:, k] == 1) & (truth[:, k] == 0)).sum()),
                ],
                [
                    int(((pred[:, k] == 0) & (truth[:, k] == 1)).sum()),
                    int(((pred[:, k] == 1) & (truth[:, k] == 1)).sum()),
                ],
            ]
            for k in range(c)
        ]
    else:
        index = np.asarray(label).astype(int).reshape(n)
        truth = np.eye(c, dtype=int)[index]
        pred = np.eye(c, dtype=int)[prob.argmax(1)]
        accuracy = float((prob.argmax(1) == index).mean()) if n else float("nan")
        matrix = np.zeros((c, c), dtype=int)
        np.add.at(matrix, (index, prob.argmax(1)), 1)
        confusion = matrix.tolist()
    per_class = {}
    for k, name in enumerate(class_names):
        tp = int(((pred[:, k] == 1) & (truth[:, k] == 1)).sum())
        fn = int(((pred[:, k] == 0) & (truth[:, k] == 1)).sum())
        tn = int(((pred[:, k] == 0) & (truth[:, k] == 0)).sum())
        fp = int(((pred[:, k] == 1) & (truth[:, k] == 0)).sum())
        per_class[name] = {
            "auc": _auc(prob[:, k], truth[:, k]),
            "sensitivity": _rate(tp, tp + fn),
            "specificity": _rate(tn, tn + fp),
            "support": int(truth[:, k].sum()),
        }
    aucs = [v["auc"] for v in per_class.values() if not np.isnan(v["auc"])]
    sens = float(np.nanmean([v["sensitivity"] for v in per_class.values()])) if n else float("nan")
    spec = float(np.nanmean([v["specificity"] for v in per_class.values()])) if n else float("nan")
    return {
        "num_images": int(n),
        "auc_macro": float(np.mean(aucs)) if aucs else float("nan"),
        "accuracy": accuracy,
        "sensitivity_macro": sens,
        "specificity_macro": spec,
        "hm": harmonic_mean(sens, spec),
        "confusion_matrix": confusion,
        "per_class": per_class,
    }
