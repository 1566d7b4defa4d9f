"""What the evaluation needs beyond MONAI's metric handlers: per-class AUC, confusion tables, HM, ROC points.

configs/evaluate.json attaches MONAI's ``ROCAUC``, ``ConfusionMatrix`` (sensitivity, specificity per class),
``MeanDice`` and ignite's ``Accuracy`` to the evaluator; ``EvaluationReport`` reads their results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.handlers import ROCAUC
from monai.metrics import get_confusion_matrix

__all__ = ["ROCAUCPerClass", "ScorableMacroAUC", "confusion_table", "harmonic_mean", "roc_curve", "roc_curves"]

logger = logging.getLogger(__name__)


class ROCAUCPerClass(ROCAUC):
    """MONAI's ``ROCAUC`` handler with ``average="none"``: ``engine.state.metrics[name]`` is the (C,) AUC per class.

    MONAI's ``IgniteMetricHandler.compute`` keeps only the first item of a list result (the first class's AUC), so
    this returns the whole list as a float64 tensor; NaN for a class with a single label value.
    """

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(average="none", output_transform=output_transform)

    def compute(self) -> torch.Tensor:
        self._is_reduced = True
        return torch.as_tensor(self.metric_fn.aggregate(), dtype=torch.float64).reshape(-1)


class ScorableMacroAUC(ROCAUCPerClass):
    """The macro ROC AUC over the classes that have positive and negative images: the validation's key metric.

    MONAI's macro average is NaN as soon as one class cannot be scored, e.g. a validation split without that class
    (leaving out a source that holds all of it). A NaN key metric never improves, so the best checkpoint would stay
    the first epoch's without a word. This averages the classes that can be scored and says once which it left out.
    """

    def __init__(self, class_names: Sequence[str] = (), output_transform: Callable = lambda x: x) -> None:
        super().__init__(output_transform=output_transform)
        self.class_names, self.reported = list(class_names), False

    def compute(self) -> float:
        per_class = super().compute()
        scorable = torch.isfinite(per_class)
        if not scorable.all() and not self.reported:
            names = self.class_names or [str(i) for i in range(len(per_class))]
            left_out = [names[i] for i in (~scorable).nonzero().flatten().tolist()]
            logger.warning(
                f"val_auc: {', '.join(left_out)} cannot be scored (no validation image has it, or every one has); "
                f"val_auc, which picks the best model, is the mean AUC of the other {int(scorable.sum())} classes"
            )
            self.reported = True
        return float(per_class[scorable].mean()) if scorable.any() else float("nan")


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of two rates (0 when both are 0, NaN when either is NaN)."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def confusion_table(pred_onehot: torch.Tensor, label_onehot: torch.Tensor, multi_label: bool = False) -> list:
    """Confusion counts of binarised predictions ``pred_onehot`` (N, C) against ``label_onehot`` (N, C).

    Multi-label: per class ``[[tn, fp], [fn, tp]]`` (C, 2, 2), MONAI's ``get_confusion_matrix`` summed over images.
    Single-label: the C x C table, rows = truth, columns = prediction, which MONAI does not compute (its confusion
    matrix is one class against the rest).
    """
    if multi_label:
        tp, fp, tn, fn = get_confusion_matrix(pred_onehot, label_onehot).sum(0).long().unbind(-1)
        return torch.stack([tn, fp, fn, tp], -1).reshape(-1, 2, 2).tolist()
    return (label_onehot.long().T @ pred_onehot.long()).tolist()


def roc_curve(prob: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates, each (N + 1,), of one class's ``prob`` (N,) against 0/1 ``truth`` (N,).

    For the ROC plot: MONAI computes the area under the curve but not its points.
    """
    order = np.argsort(-prob, kind="stable")
    truth = truth[order].astype(bool)
    tps = np.concatenate([[0], np.cumsum(truth)])
    fps = np.concatenate([[0], np.cumsum(~truth)])
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def roc_curves(prob: np.ndarray, truth_onehot: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Each class's one-vs-rest ``roc_curve`` of ``prob`` (N, C) against ``truth_onehot`` (N, C); None for a
    class whose images are all positive or all negative (no curve)."""
    return [
        None if truth_onehot[:, k].min() == truth_onehot[:, k].max() else roc_curve(prob[:, k], truth_onehot[:, k])
        for k in range(truth_onehot.shape[1])
    ]
