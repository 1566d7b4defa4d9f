"""The evaluation report: metrics.json, the ROC curves, the confusion matrix and the per-image predictions.

The metrics are MONAI's and ignite's handlers' results (``engine.state.metrics`` / ``metric_details``, attached
by configs/evaluate.json); this module only adds what they lack and writes the files.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..atomic import atomic_write, atomic_write_json, make_folder
from ..distributed import gather_objects, is_main_process
from ..plots import plot_confusion, plot_roc
from ..values import as_bool
from .metrics import confusion_table, harmonic_mean, roc_curves

__all__ = ["EvaluationReport", "METRIC_NAMES", "PREDICTIONS_FILE", "write_predictions"]

logger = logging.getLogger(__name__)

# engine.state.metrics names of configs/evaluate.json's handlers that the report reads
METRIC_NAMES = {
    "auc": "test_auc_per_class",  # ROCAUCPerClass: (C,)
    "accuracy": "test_accuracy",  # ignite Accuracy(is_multilabel=True) on one-hot predictions: exact match rate
    "sensitivity": "test_sensitivity",  # ConfusionMatrix, reduction "sum_batch": (C,)
    "specificity": "test_specificity",  # ConfusionMatrix, reduction "sum_batch": (C,)
    "dice": "test_dice",  # MeanDice with save_details: per-image Dice (N, 1) in metric_details
}


# per test image: path, true label(s) and class probabilities, for intervals that resample the test images
PREDICTIONS_FILE = "test_predictions.csv"


def write_predictions(
    path: str | os.PathLike,
    image_paths: Sequence[str],
    prob: torch.Tensor,
    label_onehot: torch.Tensor,
    class_names: Sequence[str],
) -> str:
    """Write one CSV row per image: ``image``, ``label`` and ``prob_<class>`` per class; returns ``path``.

    ``prob`` and ``label_onehot`` are (N, C). ``label`` is the true class name, or for multi-label data the true
    findings joined by ``|`` (empty when none). Written atomically, so a reader never sees half a file.
    """
    if len(image_paths) != prob.shape[0]:
        raise ValueError(f"{len(image_paths)} image paths for {prob.shape[0]} predictions")
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"] + [f"prob_{c}" for c in class_names])
        for name, p, y in zip(image_paths, prob.tolist(), label_onehot.tolist()):
            label = "|".join(c for c, v in zip(class_names, y) if v > 0.5)
            writer.writerow([name, label] + [f"{v:.6g}" for v in p])
    return os.fspath(path)


def _clean(value):
    """JSON-safe: NaN becomes null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _per_class(value: Any, num_classes: int) -> list[float]:
    """A per-class metric result ((C,) tensor, or a float when C is 1) as C floats."""
    values = torch.as_tensor(value, dtype=torch.float64).reshape(-1).tolist()
    if len(values) != num_classes:
        raise ValueError(f"expected {num_classes} per-class values, got {len(values)}")
    return values


def _defined_mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values, NaN when there are none (numpy's nanmean would warn)."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


class EvaluationReport:
    """Write ``output_dir/metrics.json``, ``roc.png`` and ``confusion_matrix.png`` from the evaluator's metrics.

    Reads ``engine.state.metrics`` / ``metric_details`` under ``metric_names`` (default ``METRIC_NAMES``) and
    collects ``prob``, ``pred_onehot``, ``label_onehot`` (B, C) from ``MultiTaskOutputs`` for what no handler
    gives: the confusion counts table, the ROC curve points and the image count. ``extra_metrics`` are callables
    ``(report_handler) -> dict`` merged into metrics.json (e.g. ``LungAttentionReport.summary``). With
    ``predictions`` (default on) it also writes ``test_predictions.csv`` (``write_predictions``) from the batches'
    ``image_path``.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        multi_label: bool = False,
        extra_metrics: Sequence[Callable[[EvaluationReport], dict]] = (),
        filename: str = "metrics.json",
        metric_names: Mapping[str, str] | None = None,
        predictions: bool = True,
    ) -> None:
        self.output_dir, self.class_names = output_dir, list(class_names)
        self.multi_label = as_bool(multi_label, "multi_label")
        self.extra_metrics, self.filename = list(extra_metrics), filename
        self.metric_names = {**METRIC_NAMES, **(metric_names or {})}
        self.metrics: dict = {}
        self.predictions = as_bool(predictions, "predictions")
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {"prob": [], "pred_onehot": [], "label_onehot": []}
        self.image_paths: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for key, values in self.outputs.items():
            values.append(engine.state.output[key].detach().float().cpu())
        batch = engine.state.batch if isinstance(engine.state.batch, Mapping) else {}
        paths = batch.get("image_path")
        if paths is None:  # a loader without image paths: number the images instead
            start, n = len(self.image_paths), engine.state.output["prob"].shape[0]
            paths = [f"image_{start + i}" for i in range(n)]
        self.image_paths.extend(str(p) for p in paths)

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Probabilities, predictions, one-hot labels and image paths of every rank, in rank order."""
        # under DDP each rank holds its share of the split: all take part in the gathering, rank 0 writes
        parts = gather_objects([torch.cat(v) if v else torch.zeros(0) for v in self.outputs.values()])
        prob, pred, onehot = (torch.cat([p[i] for p in parts if p[i].numel()] or [parts[0][i]]) for i in range(3))
        image_paths = [p for part in gather_objects(self.image_paths) for p in part]  # rank order, as the tensors
        return prob, pred, onehot, image_paths

    def _figures(
        self, engine: Engine, auc: list[float], prob: torch.Tensor, pred: torch.Tensor, onehot: torch.Tensor
    ) -> dict[str, Any]:
        """The metrics of metrics.json from the handlers' results and the collected outputs."""
        results, names, c = engine.state.metrics, self.metric_names, len(self.class_names)
        sensitivity = _per_class(results[names["sensitivity"]], c)
        specificity = _per_class(results[names["specificity"]], c)
        support = onehot.sum(0).long().tolist()
        sens_macro, spec_macro = _defined_mean(sensitivity), _defined_mean(specificity)
        dice = getattr(engine.state, "metric_details", {}).get(names["dice"])
        dice_images = 0 if dice is None else int((~torch.isnan(torch.as_tensor(dice))).sum())
        return {
            "num_images": int(prob.shape[0]),
            # MONAI's "macro" AUC is NaN as soon as one class has a single label value: average the defined ones
            "auc_macro": _defined_mean(auc),
            "accuracy": float(results[names["accuracy"]]),
            # ConfusionMatrix's "mean" reduction pools the counts over classes (micro): average the class rates
            "sensitivity_macro": sens_macro,
            "specificity_macro": spec_macro,
            "hm": harmonic_mean(sens_macro, spec_macro),  # no MONAI metric combines two rates
            "confusion_matrix": confusion_table(pred, onehot, self.multi_label),
            "per_class": {
                name: {
                    "auc": auc[k],
                    "sensitivity": sensitivity[k],
                    "specificity": specificity[k],
                    "support": support[k],
                }
                for k, name in enumerate(self.class_names)
            },
            # MeanDice reduces an all-NaN buffer (no image with a mask) to 0: report it as undefined
            "dice_lung": float(results[names["dice"]]) if dice_images else float("nan"),
            "dice_images": dice_images,
        }

    def _plots(self, auc: list[float], confusion: list, prob: torch.Tensor, onehot: torch.Tensor) -> dict[str, str]:
        """Draw the ROC curves and, for single-label data, the confusion matrix; the files, by plot."""
        plots = {
            "roc": plot_roc(
                roc_curves(prob.double().numpy(), onehot.numpy()),
                self.class_names,
                auc,
                os.path.join(self.output_dir, "roc.png"),
            )
        }
        if not self.multi_label:
            plots["confusion_matrix"] = plot_confusion(
                confusion, self.class_names, os.path.join(self.output_dir, "confusion_matrix.png")
            )
        return plots

    def _write(self, engine: Engine) -> None:
        prob, pred, onehot, image_paths = self._gathered()
        if not is_main_process():
            self.metrics = {}
            return
        auc = _per_class(engine.state.metrics[self.metric_names["auc"]], len(self.class_names))
        report = self._figures(engine, auc, prob, pred, onehot)
        for extra in self.extra_metrics:
            report.update(extra(self))
        make_folder(self.output_dir, "the output folder")
        report["plots"] = self._plots(auc, report["confusion_matrix"], prob, onehot)
        report["class_names"] = self.class_names
        if self.predictions:
            write_predictions(
                os.path.join(self.output_dir, PREDICTIONS_FILE), image_paths, prob, onehot, self.class_names
            )
        self.metrics = _clean(report)
        path = os.path.join(self.output_dir, self.filename)
        atomic_write_json(self.metrics, path)
        logger.info(
            "test: %d images, auc_macro %.4f, accuracy %.4f, hm %.4f, dice_lung %.4f (%d images with masks) -> %s",
            report["num_images"],
            report["auc_macro"],
            report["accuracy"],
            report["hm"],
            report["dice_lung"],
            report["dice_images"],
            path,
        )
