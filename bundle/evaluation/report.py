"""The evaluation report: metrics.json, the ROC curves and the confusion matrix of a test split."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
from ignite.engine import Engine, Events
from monai.metrics import compute_dice

from ..plots import plot_confusion, plot_roc
from .metrics import classification_report

__all__ = ["EvaluationReport"]

logger = logging.getLogger(__name__)


def _clean(value):
    """JSON-safe: NaN becomes null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class EvaluationReport:
    """Collect an evaluator's outputs and write ``output_dir/metrics.json``, ``roc.png`` and ``confusion_matrix.png``.

    Reads the keys that ``MultiTaskOutputs`` adds (``prob``, ``label_onehot``, ``seg_onehot``, ``mask_onehot``).
    ``extra_metrics`` are callables ``(report_handler) -> dict`` merged into metrics.json (e.g. saliency summaries).
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        multi_label: bool = False,
        extra_metrics: Sequence[Callable[[EvaluationReport], dict]] = (),
        filename: str = "metrics.json",
    ) -> None:
        self.output_dir, self.class_names, self.multi_label = output_dir, list(class_names), multi_label
        self.extra_metrics, self.filename = list(extra_metrics), filename
        self.metrics: dict = {}
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.dice: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        self.probs.append(out["prob"].detach().float().cpu().numpy())
        self.labels.append(out["label_onehot"].detach().cpu().numpy())
        if "seg_onehot" in out and "mask_onehot" in out:
            d = compute_dice(out["seg_onehot"], out["mask_onehot"], include_background=False, ignore_empty=True)
            self.dice.append(d.detach().cpu().numpy().reshape(-1))

    def _write(self, engine: Engine) -> None:
        prob, onehot = np.concatenate(self.probs), np.concatenate(self.labels)
        label = onehot if self.multi_label else onehot.argmax(1)
        report = classification_report(prob, label, self.class_names, self.multi_label)
        dice = np.concatenate(self.dice) if self.dice else np.zeros(0)
        dice = dice[~np.isnan(dice)]
        report["dice_lung"] = float(dice.mean()) if dice.size else float("nan")
        report["dice_images"] = int(dice.size)
        for extra in self.extra_metrics:
            report.update(extra(self))
        os.makedirs(self.output_dir, exist_ok=True)
        report["plots"] = {
            "roc": plot_roc(
                prob,
                onehot,
                self.class_names,
                [report["per_class"][c]["auc"] for c in self.class_names],
                os.path.join(self.output_dir, "roc.png"),
            ),
        }
        if not self.multi_label:
            report["plots"]["confusion_matrix"] = plot_confusion(
                report["confusion_matrix"], self.class_names, os.path.join(self.output_dir, "confusion_matrix.png")
            )
        report["class_names"] = self.class_names
        self.metrics = _clean(report)
        path = os.path.join(self.output_dir, self.filename)
        with open(path, "w") as f:
            json.dump(self.metrics, f, indent=2)
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
