"""The evaluation report: metrics.json, metrics.csv, the ROC curves, the confusion matrix, the per-image predictions.

The metrics are MONAI's and ignite's handlers' results (``engine.state.metrics`` / ``metric_details``, attached
by configs/evaluate.json); this module only adds what they lack (among them the 95 % bootstrap intervals of
``bundle.evaluation.bootstrap``) and writes the files.
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
from ..values import as_bool, is_int
from .bootstrap import Intervals, Predictions, bootstrap
from .metrics import confusion_table, harmonic_mean, roc_curves

__all__ = [
    "EvaluationReport",
    "METRIC_NAMES",
    "PREDICTIONS_FILE",
    "METRICS_TABLE",
    "CONFIDENCE",
    "patients_by_image",
    "write_predictions",
    "interval_fields",
    "write_metrics_table",
    "summary_line",
]

logger = logging.getLogger(__name__)

# engine.state.metrics names of configs/evaluate.json's handlers that the report reads
METRIC_NAMES = {
    "auc": "test_auc_per_class",  # ROCAUCPerClass: (C,)
    "accuracy": "test_accuracy",  # ignite Accuracy(is_multilabel=True) on one-hot predictions: exact match rate
    "sensitivity": "test_sensitivity",  # ConfusionMatrix, reduction "sum_batch": (C,)
    "specificity": "test_specificity",  # ConfusionMatrix, reduction "sum_batch": (C,)
    "dice": "test_dice",  # MeanDice with save_details: per-image Dice (N, 1) in metric_details
}


# per test image: path, true label(s), class probabilities, patient and lung Dice, for the study's intervals
PREDICTIONS_FILE = "test_predictions.csv"
# the numeric table of the metrics: one row per metric, one column per class
METRICS_TABLE = "metrics.csv"
# coverage of the intervals: metrics.json names them ci95
CONFIDENCE = 0.95


def patients_by_image(entries: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """Datalist entries' ``image`` -> ``patient`` (None where an entry has none): the report's ``patients``."""
    return {str(e["image"]): (str(e["patient"]) if e.get("patient") not in (None, "") else None) for e in entries}


def _number(value: float | int | None, digits: str = ".6g") -> str:
    """A CSV cell: integers as they are, floats to 6 significant digits, empty for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value) if isinstance(value, int) else format(value, digits)


def write_predictions(
    path: str | os.PathLike,
    image_paths: Sequence[str],
    prob: torch.Tensor,
    label_onehot: torch.Tensor,
    class_names: Sequence[str],
    patients: Sequence[str | None] | None = None,
    dice: Sequence[float] | None = None,
) -> str:
    """Write one CSV row per image: ``image``, ``label``, ``prob_<class>`` per class; returns ``path``.

    ``prob`` and ``label_onehot`` are (N, C). ``label`` is the true class name, or for multi-label data the true
    findings joined by ``|`` (empty when none). Given ``patients`` (N,) and ``dice`` (N,), the columns ``patient``
    and ``dice_lung`` follow (empty where unknown / without a ground-truth mask), so that a study resamples
    patients and scores the lung Dice. Written atomically, so a reader never sees half a file.
    """
    n = prob.shape[0]
    if len(image_paths) != n or any(v is not None and len(v) != n for v in (patients, dice)):
        raise ValueError(f"{len(image_paths)} image paths (and patients, Dice values) for {n} predictions")
    extra = [c for c, v in (("patient", patients), ("dice_lung", dice)) if v is not None]
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"] + [f"prob_{c}" for c in class_names] + extra)
        for i, (name, p, y) in enumerate(zip(image_paths, prob.tolist(), label_onehot.tolist())):
            label = "|".join(c for c, v in zip(class_names, y) if v > 0.5)
            cells = ([patients[i] or ""] if patients is not None else []) + (
                [_number(float(dice[i]))] if dice is not None else []
            )
            writer.writerow([name, label] + [f"{v:.6g}" for v in p] + cells)
    return os.fspath(path)


def _pair(interval: tuple[float, float]) -> list[float] | None:
    """``[low, high]``, or None when the interval is undefined."""
    return None if any(math.isnan(v) for v in interval) else [float(v) for v in interval]


def interval_fields(intervals: Intervals, class_names: Sequence[str]) -> tuple[dict, dict[str, list | None]]:
    """metrics.json's ``ci95`` (metric -> ``[low, high]`` or None) and ``bootstrap`` blocks, and per class name
    its AUC's interval (``per_class[name]["auc_ci95"]``)."""
    ci = {"ci95": {k: _pair(v) for k, v in intervals.metrics.items()}, "bootstrap": intervals.settings()}
    return ci, {name: _pair(v) for name, v in zip(class_names, intervals.auc_per_class)}


# metrics.csv: row -> (metrics.json key of the value, of its interval in ci95, per-class key)
TABLE_ROWS = {
    "auc": ("auc_macro", "auc_macro", "auc"),
    "accuracy": ("accuracy", "accuracy", None),
    "sensitivity": ("sensitivity_macro", "sensitivity_macro", "sensitivity"),
    "specificity": ("specificity_macro", "specificity_macro", "specificity"),
    "hm": ("hm", "hm", None),
    "dice_lung": ("dice_lung", "dice_lung", None),
    "support": ("num_images", None, "support"),
}


def write_metrics_table(path: str | os.PathLike, report: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """Write ``metrics.csv`` from a metrics.json ``report``: ``metric,value,ci95_low,ci95_high,<class>...``.

    One row per metric of ``TABLE_ROWS``: the overall value (macro means; ``support``: the number of images), its
    interval, and each class's value (AUC, sensitivity, specificity, support); numbers only, empty cells where a
    value does not apply or is undefined. Written atomically; returns ``path``.
    """
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value", "ci95_low", "ci95_high", *class_names])
        for row, (key, ci_key, class_key) in TABLE_ROWS.items():
            interval = (report.get("ci95", {}).get(ci_key) if ci_key else None) or [None, None]
            per_class = [report["per_class"][c].get(class_key) if class_key else None for c in class_names]
            writer.writerow([row, *(_number(v) for v in (report.get(key), *interval, *per_class))])
    return os.fspath(path)


def _show(value: float | None, interval: list[float] | None, label: str = "") -> str:
    """``0.956 (95% CI 0.90-0.99)``; the interval left out when there is none; ``n/a`` when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" + (f" ({label}{interval[0]:.2f}-{interval[1]:.2f})" if interval else "")


def _who(report: Mapping[str, Any]) -> str:
    """``22 images / 14 patients``, or ``22 images`` when the images are the bootstrap's units."""
    b = report.get("bootstrap", {})
    patients = f" / {b['units']} patients" if b.get("unit") == "patient" else ""
    return f"{report['num_images']} images{patients}"


def summary_line(report: Mapping[str, Any], path: str) -> str:
    """The log line of an evaluation: the image (and patient) count and the main scores with their intervals.

    ``test: 22 images / 14 patients: AUC 0.956 (95% CI 0.90-0.99), accuracy 0.773 (0.59-0.91), HM 0.879
    (0.80-0.94), lung Dice 0.896 (0.87-0.92; 4 images with masks) -> <path>``.
    """
    ci = report.get("ci95", {})
    dice = _show(report["dice_lung"], ci.get("dice_lung"))
    masks = f"{report['dice_images']} images with masks"
    dice = f"{dice[:-1]}; {masks})" if dice.endswith(")") else f"{dice} ({masks})"
    scores = [
        f"AUC {_show(report['auc_macro'], ci.get('auc_macro'), f'{CONFIDENCE:.0%} CI ')}",
        f"accuracy {_show(report['accuracy'], ci.get('accuracy'))}",
        f"HM {_show(report['hm'], ci.get('hm'))}",
        f"lung Dice {dice}",
    ]
    return f"test: {_who(report)}: {', '.join(scores)} -> {path}"


def _clean(value):
    """JSON-safe: NaN becomes null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _is_figure(value: Any) -> bool:
    """A number of metrics.json (null: an undefined one), not a flag, text, list or table."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _figure(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


def _interval(name: str, interval: Any) -> dict[str, float]:
    """``[low, high]`` (or null) as ``<name>_low`` and ``<name>_high``."""
    low, high = interval if isinstance(interval, (list, tuple)) and len(interval) == 2 else (None, None)
    return {f"{name}_low": _figure(low), f"{name}_high": _figure(high)}


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
    """Write ``output_dir/metrics.json``, ``metrics.csv``, ``roc.png`` and ``confusion_matrix.png``.

    Reads ``engine.state.metrics`` / ``metric_details`` under ``metric_names`` (default ``METRIC_NAMES``) and
    collects ``prob``, ``pred_onehot``, ``label_onehot`` (B, C) from ``MultiTaskOutputs`` for what no handler
    gives: the confusion counts table, the ROC curve points, the image count and the bootstrap intervals.
    ``extra_metrics`` are callables ``(report_handler) -> dict`` merged into metrics.json (e.g.
    ``LungAttentionReport.summary``). With ``predictions`` (default on) it also writes ``test_predictions.csv``
    (``write_predictions``) from the batches' ``image_path``.

    metrics.json keeps the handlers' point estimates and adds their 95 % bootstrap intervals
    (``bundle.evaluation.bootstrap``, ``n_bootstrap`` resamples seeded by ``seed``; 0: none): ``ci95``
    (``auc_macro``, ``accuracy``, ``sensitivity_macro``, ``specificity_macro``, ``hm``, ``dice_lung``: each
    ``[low, high]``, null where undefined), ``per_class[name]["auc_ci95"]`` and ``bootstrap`` (``n_resamples``,
    ``confidence``, ``unit``: ``"patient"`` when ``patients`` (image path -> patient id, e.g.
    ``patients_by_image(test entries)``) names any test image's patient, else ``"image"``; ``units``: how many
    were resampled; ``seed``).
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
        patients: Mapping[str, str | None] | None = None,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> None:
        self.output_dir, self.class_names = output_dir, list(class_names)
        self.multi_label = as_bool(multi_label, "multi_label")
        self.extra_metrics, self.filename = list(extra_metrics), filename
        self.metric_names = {**METRIC_NAMES, **(metric_names or {})}
        self.metrics: dict = {}
        self.predictions = as_bool(predictions, "predictions")
        self.patients = dict(patients or {})
        if not is_int(n_bootstrap) or n_bootstrap < 0 or not is_int(seed):
            raise ValueError(f"n_bootstrap must be an integer >= 0 and seed an integer, got {n_bootstrap}, {seed}")
        self.n_bootstrap, self.seed = int(n_bootstrap), int(seed)
        self._reset()

    def final_metrics(self) -> dict[str, float]:
        """metrics.json's figures as numbers, for a run's record (``bundle.tracking``): its top-level numbers, each
        interval as ``<name>_ci95_low`` and ``_high``, and ``<class>/<figure>`` of each class; NaN where undefined
        (null in metrics.json). Empty before the report is written (and on ranks other than 0)."""
        m = self.metrics
        out = {k: _figure(v) for k, v in m.items() if _is_figure(v)}
        for name, interval in (m.get("ci95") or {}).items():
            out.update(_interval(f"{name}_ci95", interval))
        for name, figures in (m.get("per_class") or {}).items():
            for figure, value in figures.items():
                if figure.endswith("ci95"):
                    out.update(_interval(f"{name}/{figure}", value))
                elif _is_figure(value):
                    out[f"{name}/{figure}"] = _figure(value)
        return out

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

    def _test_predictions(
        self, engine: Engine, prob: torch.Tensor, pred: torch.Tensor, onehot: torch.Tensor, image_paths: list[str]
    ) -> Predictions:
        """The gathered outputs with each image's patient (from ``patients``) and lung Dice (the Dice handler's
        per-image details, gathered in the same rank order; NaN without a mask)."""
        dice = getattr(engine.state, "metric_details", {}).get(self.metric_names["dice"])
        dice = None if dice is None else torch.as_tensor(dice, dtype=torch.float64).reshape(-1).numpy()
        if dice is not None and dice.shape[0] != prob.shape[0]:  # one value per image, or none usable
            logger.warning("%d per-image Dice values for %d images: no lung Dice interval", dice.shape[0], len(prob))
            dice = None
        patients = [self.patients.get(p) for p in image_paths]
        arrays = (t.double().numpy() for t in (prob, onehot))
        return Predictions(
            image_paths, *arrays, self.class_names, self.multi_label, pred.double().numpy(), patients, dice
        )

    def _plots(self, report: dict, prob: torch.Tensor, onehot: torch.Tensor) -> dict[str, str]:
        """Draw the ROC curves (AUC, interval and support per class) and, for single-label data, the confusion
        matrix; the files, by plot."""
        per_class = [report["per_class"][c] for c in self.class_names]
        macro = _show(report["auc_macro"], report["ci95"]["auc_macro"], f"{CONFIDENCE:.0%} CI ")
        roc = plot_roc(
            roc_curves(prob.double().numpy(), onehot.numpy()),
            self.class_names,
            [c["auc"] for c in per_class],
            os.path.join(self.output_dir, "roc.png"),
            intervals=[c["auc_ci95"] for c in per_class],
            support=[c["support"] for c in per_class],
            subtitle=f"macro AUC {macro}, {_who(report)}",
            confidence=CONFIDENCE,
        )
        plots = {"roc": roc}
        if not self.multi_label:
            plots["confusion_matrix"] = plot_confusion(
                report["confusion_matrix"], self.class_names, os.path.join(self.output_dir, "confusion_matrix.png")
            )
        return plots

    def _write(self, engine: Engine) -> None:
        prob, pred, onehot, image_paths = self._gathered()
        if not is_main_process():
            self.metrics = {}
            return
        auc = _per_class(engine.state.metrics[self.metric_names["auc"]], len(self.class_names))
        report = self._figures(engine, auc, prob, pred, onehot)
        test = self._test_predictions(engine, prob, pred, onehot, image_paths)
        intervals = bootstrap([test], self.n_bootstrap, CONFIDENCE, self.seed)
        blocks, class_ci = interval_fields(intervals, self.class_names)
        report.update(blocks)
        for name, interval in class_ci.items():
            report["per_class"][name]["auc_ci95"] = interval
        for extra in self.extra_metrics:
            report.update(extra(self))
        make_folder(self.output_dir, "the output folder")
        report["plots"] = self._plots(report, prob, onehot)
        report["class_names"] = self.class_names
        if self.predictions:
            path = os.path.join(self.output_dir, PREDICTIONS_FILE)
            write_predictions(path, image_paths, prob, onehot, self.class_names, test.patients, test.dice)
        self.metrics = _clean(report)
        write_metrics_table(os.path.join(self.output_dir, METRICS_TABLE), self.metrics, self.class_names)
        path = os.path.join(self.output_dir, self.filename)
        atomic_write_json(self.metrics, path)
        logger.info("%s", summary_line(self.metrics, path))
