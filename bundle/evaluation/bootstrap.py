"""Bootstrap intervals over the test images: how much a test score would move with another draw of test patients.

The unit of resampling is the test image: each resample draws the N test images with replacement, scores every
run (one per training seed, all tested on the same images) on that draw, and averages the runs' scores, so that
the interval covers the test-set uncertainty of the seed-averaged score the study reports. The seeds are not
resampled: with 1 to 3 seeds their spread is reported as a standard deviation next to the interval instead.
The interval is the percentile interval of the resampled scores. Images of one patient are resampled
independently; a split keeps each patient in one section, and with few images per patient this narrows the
interval only slightly.

The scores are computed here rather than with MONAI's ``compute_roc_auc``: a study scores thousands of resamples,
and MONAI's AUC walks the sorted scores in a Python loop; the rank formula below is the same area (ties counted
half) in a few vectorised numpy calls.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["SCORES", "Predictions", "read_predictions", "align", "macro_auc", "accuracy", "hm", "bootstrap_interval"]


class Predictions:
    """One test run's per-image results: ``images`` (N,), ``prob`` (N, C) and 0/1 ``truth`` (N, C)."""

    def __init__(self, images: Sequence[str], prob: np.ndarray, truth: np.ndarray, class_names: Sequence[str]):
        self.images, self.class_names = list(images), list(class_names)
        self.prob, self.truth = np.asarray(prob, dtype=np.float64), np.asarray(truth, dtype=np.float64)
        if self.prob.shape != self.truth.shape or self.prob.shape != (len(self.images), len(self.class_names)):
            raise ValueError(f"prob {self.prob.shape} and truth {self.truth.shape} for {len(self.images)} images")

    def subset(self, keep: np.ndarray) -> Predictions:
        """The images where boolean ``keep`` (N,) is true."""
        return Predictions(
            [i for i, k in zip(self.images, keep) if k], self.prob[keep], self.truth[keep], self.class_names
        )


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read a ``test_predictions.csv`` (``bundle.evaluation.report.write_predictions``); ValueError if malformed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0]) if rows else []
    classes = [c[len("prob_") :] for c in fields if c.startswith("prob_")]
    if not rows or "image" not in fields or "label" not in fields or not classes:
        raise ValueError(f"{path}: expected a header image,label,prob_<class>... and at least one row")
    try:
        prob = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: a probability is not a number ({e})") from e
    truth = np.array([[float(c in r["label"].split("|")) for c in classes] for r in rows])
    return Predictions([r["image"] for r in rows], prob, truth, classes)


def align(runs: Sequence[Predictions]) -> list[Predictions]:
    """The runs with their images in the first run's order; ValueError when they were not tested on the same images."""
    first = runs[0].images
    aligned = []
    for run in runs:
        if sorted(run.images) != sorted(first):
            raise ValueError("the runs were tested on different images: a bootstrap over seeds needs one test split")
        order = {name: i for i, name in enumerate(run.images)}
        index = np.array([order[name] for name in first], dtype=int)
        aligned.append(Predictions(first, run.prob[index], run.truth[index], run.class_names))
    return aligned


def _auc_rows(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """ROC AUC of each row: ``scores`` and 0/1 ``truth`` (R, N) -> (R,), NaN where a row has one label value.

    Mann-Whitney: (sum of the positives' ranks - P(P+1)/2) / (P x Q), with average ranks for ties.
    """
    order = np.argsort(scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    n = scores.shape[1]
    ranks_sorted = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), scores.shape).copy()
    # average ranks within runs of equal scores: each tie group gets the mean of its positions
    for r in range(scores.shape[0]):
        values, start, counts = np.unique(sorted_scores[r], return_index=True, return_counts=True)
        if len(values) < n:
            ranks_sorted[r] = np.repeat(start + (counts + 1) / 2.0, counts)
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    pos = truth.sum(1)
    neg = n - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * truth).sum(1) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def macro_auc(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean of the defined one-vs-rest class AUCs, as metrics.json's ``auc_macro``: (R, N, C) -> (R,)."""
    per_class = np.stack([_auc_rows(prob[..., k], truth[..., k]) for k in range(prob.shape[-1])], -1)
    defined = ~np.isnan(per_class)
    total = np.where(defined, per_class, 0).sum(-1)
    count = defined.sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def accuracy(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Share of images whose most probable class is the true one (single-label): (R, N, C) -> (R,)."""
    hit = np.take_along_axis(truth, prob.argmax(-1)[..., None], axis=-1)[..., 0]
    return hit.mean(-1)


def hm(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """metrics.json's ``hm``: harmonic mean of the macro sensitivity and macro specificity: (R, N, C) -> (R,).

    Predictions are the most probable class (single-label); a class absent from a resample has no sensitivity
    and is left out of that resample's mean, as in the report.
    """
    pred = np.zeros_like(truth)
    np.put_along_axis(pred, prob.argmax(-1)[..., None], 1.0, axis=-1)
    tp, p = (pred * truth).sum(-2), truth.sum(-2)
    tn, n = ((1 - pred) * (1 - truth)).sum(-2), (1 - truth).sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = np.nanmean(np.where(p > 0, tp / p, np.nan), -1), np.nanmean(np.where(n > 0, tn / n, np.nan), -1)
        return np.where(sens + spec > 0, 2 * sens * spec / (sens + spec), 0.0)


# metric name (as in metrics.json) -> score of (R, N, C) probabilities and truths
SCORES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "auc_macro": macro_auc,
    "accuracy": accuracy,
    "hm": hm,
}


def bootstrap_interval(
    runs: Sequence[Predictions],
    metric: str | Callable[[np.ndarray, np.ndarray], np.ndarray] = "auc_macro",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 200,
) -> tuple[float, float]:
    """Percentile interval of the seed-averaged ``metric`` over test images resampled with replacement.

    Args:
        runs: one ``Predictions`` per seed, all on the same test images (any order; aligned by image path).
        metric: a name of ``SCORES`` or a function (R, N, C) x2 -> (R,).
        n_resamples: bootstrap resamples.
        confidence: the interval's coverage, e.g. 0.95.
        seed: seeds the resampling, so that a report is reproducible.
        chunk: resamples scored at once (memory: chunk x N x C floats per run).

    Returns:
        ``(low, high)``; NaN, NaN when no resample has a defined score (e.g. AUC on a single-class test set).
        Resamples whose score is undefined (NaN) are left out.
    """
    if not runs:
        raise ValueError("bootstrap_interval needs at least one run")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    score = SCORES[metric] if isinstance(metric, str) else metric
    runs = align(runs)
    n = len(runs[0].images)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_resamples, chunk):
        index = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        per_run = np.stack([score(run.prob[index], run.truth[index]) for run in runs])  # (runs, R)
        with np.errstate(invalid="ignore"):
            values.append(np.where(np.isnan(per_run).any(0), np.nan, per_run.mean(0)))
    scores = np.concatenate(values)
    scores = scores[~np.isnan(scores)]
    if not scores.size:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return float(low), float(high)
