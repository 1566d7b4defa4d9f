"""Bootstrap intervals of the test scores: how much a score would move with another draw of test patients.

Shared by the evaluation report (``metrics.json``, ``metrics.csv``, the ROC legend) and the label-efficiency study.
Each resample draws the test's units with replacement: its **patients** when the predictions carry patient ids
(a cluster bootstrap: every image of a drawn patient, as often as the patient is drawn; an image without an id
is a patient of its own), else its **images**. Images of one patient are correlated, so resampling them one by
one would make the interval too narrow. Every run (one per training seed, all tested on the same images) is
scored on the same resample and the runs' scores are averaged, so that the interval covers the test-set
uncertainty of the seed-averaged score a study reports; the seeds are not resampled. The interval is the
percentile interval of the resampled scores; resamples where a score is undefined (e.g. a class drawn without a
positive image) are left out of that score's interval.

A resample is held as how often it draws each image (its weights, ``(R, N)`` counts), so every score is a
weighted sum over the original images: one sort per class serves every resample, resamples of patients (of
unequal sizes) need no padding, and a chunk of resamples is scored in a few vectorised numpy calls. The scores
are computed here rather than with MONAI's ``compute_roc_auc`` and metric handlers: those score one set of
images at a time, and MONAI's AUC walks the sorted scores in a Python loop; the weighted rank formula below is
the same area (ties counted half). With all weights 1 the scores are metrics.json's point estimates.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..values import described, integer

__all__ = [
    "METRICS",
    "RULES",
    "Predictions",
    "read_predictions",
    "align",
    "resampling_units",
    "draws",
    "unit_counts",
    "scores",
    "resample_scores",
    "percentile_interval",
    "Intervals",
    "bootstrap",
]

# the scores with an interval, named as in metrics.json; "auc_per_class" (R, C) comes beside them
METRICS = ("auc_macro", "accuracy", "sensitivity_macro", "specificity_macro", "hm", "dice_lung")

# the setting the evaluation report consumes (bundle.settings gathers every component's table)
RULES = {
    "n_bootstrap": described(
        integer(0), "resamples of the test patients (else images) for the metrics' 95 % bootstrap intervals (0: none)"
    )
}


class Predictions:
    """One test run's per-image results.

    ``images`` (N,) paths, ``prob`` (N, C) class probabilities, 0/1 ``truth`` (N, C); ``pred`` (N, C) the 0/1
    predictions (default: the most probable class, or ``prob > 0.5`` when ``multi_label``); ``patients`` (N,)
    ids (None or "" where unknown; None: all unknown); ``dice`` (N,) lung Dice, NaN for an image without a
    ground-truth mask (None: no Dice).
    """

    def __init__(
        self,
        images: Sequence[str],
        prob: np.ndarray,
        truth: np.ndarray,
        class_names: Sequence[str],
        multi_label: bool = False,
        pred: np.ndarray | None = None,
        patients: Sequence[str | None] | None = None,
        dice: np.ndarray | None = None,
    ):
        self.images, self.class_names, self.multi_label = list(images), list(class_names), multi_label
        self.prob, self.truth = np.asarray(prob, dtype=np.float64), np.asarray(truth, dtype=np.float64)
        shape = (len(self.images), len(self.class_names))
        if pred is None:
            pred = self.prob > 0.5 if multi_label else np.eye(shape[1])[self.prob.argmax(1)]
        self.pred = np.asarray(pred, dtype=np.float64)
        self.patients = None if patients is None else [p or None for p in patients]
        self.dice = None if dice is None else np.asarray(dice, dtype=np.float64).reshape(-1)
        if not self.prob.shape == self.truth.shape == self.pred.shape == shape:
            raise ValueError(f"prob {self.prob.shape}, truth {self.truth.shape}, pred {self.pred.shape} for {shape}")
        for name, values in (("patients", self.patients), ("dice", self.dice)):
            if values is not None and len(values) != shape[0]:
                raise ValueError(f"{len(values)} {name} for {shape[0]} images")

    def take(self, index: np.ndarray) -> Predictions:
        """The images at ``index`` (M,) integer positions, in that order."""
        index = np.asarray(index, dtype=int)
        return Predictions(
            [self.images[i] for i in index],
            self.prob[index],
            self.truth[index],
            self.class_names,
            self.multi_label,
            self.pred[index],
            None if self.patients is None else [self.patients[i] for i in index],
            None if self.dice is None else self.dice[index],
        )

    def subset(self, keep: np.ndarray) -> Predictions:
        """The images where boolean ``keep`` (N,) is true."""
        return self.take(np.flatnonzero(keep))


def _column(rows: list[dict], name: str, path: str | os.PathLike) -> list[float]:
    """A numeric column of ``rows``, NaN for an empty cell; ValueError naming ``path`` for a non-number."""
    try:
        return [float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows]
    except ValueError as e:
        raise ValueError(f"{path}: a value of column {name} is not a number ({e})") from e


def read_predictions(path: str | os.PathLike, multi_label: bool = False) -> Predictions:
    """Read a ``test_predictions.csv`` (``bundle.evaluation.report.write_predictions``); ValueError if malformed.

    Its optional ``patient`` and ``dice_lung`` columns become the predictions' ``patients`` and ``dice``.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0]) if rows else []
    classes = [c[len("prob_") :] for c in fields if c.startswith("prob_")]
    if not rows or "image" not in fields or "label" not in fields or not classes:
        raise ValueError(f"{path}: expected a header image,label,prob_<class>... and at least one row")
    prob = np.array([_column(rows, f"prob_{c}", path) for c in classes]).T
    if np.isnan(prob).any():
        raise ValueError(f"{path}: a probability is missing")
    truth = np.array([[float(c in r["label"].split("|")) for c in classes] for r in rows])
    patients = [r["patient"] for r in rows] if "patient" in fields else None
    dice = np.array(_column(rows, "dice_lung", path)) if "dice_lung" in fields else None
    return Predictions([r["image"] for r in rows], prob, truth, classes, multi_label, None, patients, dice)


def align(runs: Sequence[Predictions]) -> list[Predictions]:
    """The runs with their images in the first run's order; ValueError when they were not tested on the same images."""
    first = runs[0].images
    aligned = []
    for run in runs:
        if sorted(run.images) != sorted(first):
            raise ValueError("the runs were tested on different images: a bootstrap over seeds needs one test split")
        order = {name: i for i, name in enumerate(run.images)}
        aligned.append(run.take(np.array([order[name] for name in first], dtype=int)))
    return aligned


def resampling_units(images: Sequence[str], patients: Sequence[str | None] | None) -> tuple[np.ndarray, str]:
    """Each image's unit (N,) int in [0, U) and the kind of unit: ``"patient"`` when any id is known, else ``"image"``.

    Units are numbered in the sorted order of their names, so that a seed draws the same patients whatever the
    order of the images (several processes gather them in another order than one).
    """
    if patients is not None and any(patients):
        names = [f"p:{p}" if p else f"i:{image}" for image, p in zip(images, patients)]
        return np.unique(names, return_inverse=True)[1].reshape(-1), "patient"
    seen: dict[str, int] = {}
    names = []
    for image in images:  # one unit per image, also for a path listed twice
        seen[image] = seen.get(image, -1) + 1
        names.append(f"{image}\0{seen[image]}")
    return np.unique(names, return_inverse=True)[1].reshape(-1), "image"


def draws(n_units: int, n_resamples: int, seed: int, chunk: int = 250) -> Iterator[np.ndarray]:
    """The units each resample draws, ``chunk`` resamples at a time: (r, n_units) int arrays, seeded."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, chunk):
        yield rng.integers(0, n_units, size=(min(chunk, n_resamples - start), n_units))


def unit_counts(drawn: np.ndarray, n_units: int) -> np.ndarray:
    """How often each resample drew each unit: ``drawn`` (r, K) unit indexes -> (r, n_units) float counts."""
    r = drawn.shape[0]
    flat = (drawn + n_units * np.arange(r)[:, None]).ravel()
    return np.bincount(flat, minlength=r * n_units).reshape(r, n_units).astype(np.float64)


def _auc(score: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC of one class: ``score``, 0/1 ``truth`` (N,), ``weights`` (R, N) -> (R,), NaN without both
    a positive and a negative image.

    Mann-Whitney with weights: the weight of the (positive, negative) pairs ranked right, ties counted half, over
    the weight of all pairs. The negatives are sorted once; per resample only a cumulative sum of their weights
    and two look-ups per positive remain (the weights are counts, so the sums are exact).
    """
    positive = truth > 0.5
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if not pos.size or not neg.size:
        return np.full(weights.shape[0], np.nan)
    neg = neg[np.argsort(score[neg], kind="stable")]
    cum = np.zeros((weights.shape[0], neg.size + 1))
    np.cumsum(weights[:, neg], axis=1, out=cum[:, 1:])  # cum[:, j]: weight of the j lowest-scored negatives
    below = cum[:, np.searchsorted(score[neg], score[pos], "left")]  # negatives scored lower than each positive
    up_to = cum[:, np.searchsorted(score[neg], score[pos], "right")]  # ... lower or equal
    w_pos = weights[:, pos]
    p, q = w_pos.sum(1), cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = 0.5 * (w_pos * (below + up_to)).sum(1) / (p * q)
    return np.where((p > 0) & (q > 0), auc, np.nan)


def _defined_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the non-NaN values, NaN where there are none: (..., C) -> (...)."""
    defined = ~np.isnan(values)
    count = defined.sum(-1)
    return np.where(count > 0, np.where(defined, values, 0).sum(-1) / np.maximum(count, 1), np.nan)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def scores(run: Predictions, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every score of ``METRICS`` (R,) and ``auc_per_class`` (R, C) of ``run`` under image ``weights`` (R, N).

    ``weights`` default to one row of ones: the scores of the test set itself, as metrics.json gives them
    (macro AUC: mean of the defined class AUCs; accuracy: share of images whose predictions are all right, i.e.
    the most probable class single-label, exact match multi-label; macro sensitivity and specificity: means of
    the defined class rates; ``hm``: their harmonic mean; ``dice_lung``: mean Dice of the images with a mask).
    """
    n, c = len(run.images), len(run.class_names)
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    if n == 0:  # no image: every score is undefined
        return {**{k: np.full(w.shape[0], np.nan) for k in METRICS}, "auc_per_class": np.full((w.shape[0], c), np.nan)}
    auc = np.stack([_auc(run.prob[:, k], run.truth[:, k], w) for k in range(run.prob.shape[1])], -1)
    pred, truth = run.pred, run.truth
    sens = _defined_mean(_ratio(w @ (pred * truth), w @ truth))
    spec = _defined_mean(_ratio(w @ ((1 - pred) * (1 - truth)), w @ (1 - truth)))
    with np.errstate(invalid="ignore"):
        hm = np.where(sens + spec > 0, 2 * sens * spec / (sens + spec), np.where(np.isnan(sens + spec), np.nan, 0.0))
    dice = np.full(w.shape[0], np.nan)
    if run.dice is not None:
        has = ~np.isnan(run.dice)
        dice = _ratio(w @ np.where(has, run.dice, 0.0), w @ has.astype(np.float64))
    return {
        "auc_macro": _defined_mean(auc),
        "accuracy": _ratio(w @ (pred == truth).all(1).astype(np.float64), w.sum(1)),
        "sensitivity_macro": sens,
        "specificity_macro": spec,
        "hm": hm,
        "dice_lung": dice,
        "auc_per_class": auc,
    }


def _canonical(runs: Sequence[Predictions]) -> tuple[list[Predictions], np.ndarray, str]:
    """The runs aligned, their images sorted by unit then path; each image's unit (N,) and the kind of unit.

    The sorted order makes the sums, hence the intervals, the same to the last bit whatever order the images came
    in (one process or several).
    """
    runs = align(runs)
    patients = next((r.patients for r in runs if r.patients is not None), None)
    unit, kind = resampling_units(runs[0].images, patients)
    order = np.lexsort((np.array(runs[0].images, dtype=str), unit))
    return [r.take(order) for r in runs], unit[order], kind


def resample_scores(
    runs: Sequence[Predictions], n_resamples: int = 1000, seed: int = 0, chunk: int = 250
) -> tuple[dict[str, np.ndarray], str, int]:
    """Every score of every resample, averaged over the runs: ``METRICS`` (R,) and ``auc_per_class`` (R, C).

    Args:
        runs: one ``Predictions`` per seed, all on the same test images (any order; aligned by image path).
        n_resamples: R, the bootstrap resamples; drawn by ``draws(U, R, seed, chunk)`` over the U units.
        seed: seeds the resampling, so that a report is reproducible.
        chunk: resamples scored at once (memory: a few chunk x N float arrays).

    Returns:
        The scores (NaN where undefined in any run), the kind of unit (``"patient"`` or ``"image"``) and U.
    """
    if not runs:
        raise ValueError("a bootstrap needs at least one run")
    runs, unit, kind = _canonical(runs)
    n_units = int(unit.max()) + 1 if unit.size else 0
    parts: list[dict[str, np.ndarray]] = []
    for drawn in draws(n_units, n_resamples if n_units else 0, seed, chunk):
        weights = unit_counts(drawn, n_units)[:, unit]  # (r, N): each image counts as often as its unit
        per_run = [scores(run, weights) for run in runs]
        parts.append({k: np.mean([s[k] for s in per_run], axis=0) for k in per_run[0]})  # NaN if any run's is
    c = len(runs[0].class_names)
    empty = {**{k: np.zeros(0) for k in METRICS}, "auc_per_class": np.zeros((0, c))}
    result = {k: np.concatenate([p[k] for p in parts]) for k in empty} if parts else empty
    return result, kind, n_units


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of the defined ``values`` (R,); NaN, NaN when none is."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Intervals:
    """``bootstrap``'s result: per score of ``METRICS`` and per class AUC, ``(low, high)`` (NaN where undefined)."""

    metrics: dict[str, tuple[float, float]]
    auc_per_class: list[tuple[float, float]]
    unit: str  # "patient" or "image"
    units: int  # patients (or images) resampled
    n_resamples: int
    confidence: float
    seed: int

    def settings(self) -> dict:
        """How the intervals were drawn: metrics.json's ``bootstrap`` block."""
        keys = ("n_resamples", "confidence", "unit", "units", "seed")
        return {k: getattr(self, k) for k in keys}


def bootstrap(
    runs: Sequence[Predictions], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0, chunk: int = 250
) -> Intervals:
    """Percentile intervals of every score over test patients (or images) resampled with replacement.

    ``runs``, ``n_resamples``, ``seed`` and ``chunk`` as in ``resample_scores``; ``confidence`` the intervals'
    coverage, e.g. 0.95. With ``n_resamples`` 0 every interval is NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    values, unit, units = resample_scores(runs, n_resamples, seed, chunk)
    per_class = values["auc_per_class"]
    return Intervals(
        {k: percentile_interval(values[k], confidence) for k in METRICS},
        [percentile_interval(per_class[:, k], confidence) for k in range(per_class.shape[1])],
        unit,
        units,
        n_resamples,
        confidence,
        seed,
    )
