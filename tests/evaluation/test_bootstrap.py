"""bundle.evaluation.bootstrap: scores against MONAI's and plain counts, intervals against a naive bootstrap loop,
patient (cluster) resampling, and intervals that behave as they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from bundle.evaluation.bootstrap import (
    METRICS,
    Predictions,
    bootstrap,
    draws,
    read_predictions,
    resample_scores,
    resampling_units,
    scores,
)
from bundle.evaluation.report import write_predictions

CLASSES = ["a", "b", "c"]


def make_run(
    n: int, signal: float, seed: int, images: list[str] | None = None, patients: bool = False, multi_label=False
) -> Predictions:
    """Seeded predictions with ties (rounded logits); with ``patients``, 1 to 3 images per patient, and a lung
    Dice for two images in three."""
    rng = np.random.default_rng(seed)
    if multi_label:
        truth = (rng.random((n, 3)) < 0.4).astype(float)
        prob = 1 / (1 + np.exp(-np.round(rng.normal(size=(n, 3)) + signal * (2 * truth - 1), 1)))
    else:
        truth = np.eye(3)[np.arange(n) % 3]
        logits = np.round(rng.normal(size=(n, 3)) + signal * truth, 1)  # ties, which the AUC must count half
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = [f"p{i}" for i in np.cumsum(rng.random(n) < 0.5)] if patients else None
    dice = np.where(np.arange(n) % 3 == 0, np.nan, rng.uniform(0.6, 0.95, n))
    return Predictions(
        images or [f"img{i}" for i in range(n)], prob, truth, CLASSES, multi_label, patients=ids, dice=dice
    )


def naive_scores(run: Predictions, index: np.ndarray) -> dict[str, float | list[float]]:
    """The scores of the images at ``index`` (repeats included), one by one: MONAI's AUC and plain counts."""
    prob, truth, pred, dice = run.prob[index], run.truth[index], run.pred[index], run.dice[index]
    auc = [
        compute_roc_auc(torch.tensor(prob[:, k]), torch.tensor(truth[:, k])) if 0 < truth[:, k].sum() < len(index)
        else math.nan
        for k in range(truth.shape[1])
    ]  # fmt: skip
    sens = [(pred[:, k] * truth[:, k]).sum() / truth[:, k].sum() for k in range(3) if truth[:, k].sum() > 0]
    spec = [((1 - pred[:, k]) * (1 - truth[:, k])).sum() / (1 - truth[:, k]).sum() for k in range(3)
            if (1 - truth[:, k]).sum() > 0]  # fmt: skip
    s, p = (float(np.mean(v)) if v else math.nan for v in (sens, spec))
    defined = [a for a in auc if not math.isnan(a)]
    return {
        "auc_macro": float(np.mean(defined)) if defined else math.nan,
        "accuracy": float((pred == truth).all(1).mean()),
        "sensitivity_macro": s,
        "specificity_macro": p,
        "hm": math.nan if math.isnan(s + p) else (0.0 if s + p == 0 else 2 * s * p / (s + p)),
        "dice_lung": float(np.nanmean(dice)) if (~np.isnan(dice)).any() else math.nan,
        "auc_per_class": auc,
    }


@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_of_the_test_set_match_monai_auc_and_plain_counts(multi_label):
    run = make_run(60, 1.0, 0, multi_label=multi_label)
    got = scores(run)
    expected = naive_scores(run, np.arange(60))
    for name in METRICS:
        assert got[name][0] == pytest.approx(expected[name], rel=1e-12), name
    assert got["auc_per_class"][0] == pytest.approx(expected["auc_per_class"], rel=1e-12)
    if multi_label:  # predictions are prob > 0.5; accuracy is the exact-match rate
        assert np.array_equal(run.pred, run.prob > 0.5)
        assert got["accuracy"][0] < (run.pred == run.truth).mean()


def test_intervals_equal_a_naive_bootstrap_loop_over_the_same_patient_draws():
    run = make_run(45, 1.0, 1, patients=True)
    unit, kind = resampling_units(run.images, run.patients)
    assert kind == "patient" and unit.max() + 1 == len(set(run.patients)) < 45
    values, kind, units = resample_scores([run], n_resamples=300, seed=7, chunk=64)
    assert (kind, units) == ("patient", len(set(run.patients)))
    # units are numbered in sorted order of their names ("p:<id>"); draw the same units, then the naive way:
    # every image of each drawn patient, one list of images per resample, scored from scratch
    names = sorted(set(run.patients))
    members = {name: [i for i, p in enumerate(run.patients) if p == name] for name in names}
    drawn = np.concatenate(list(draws(len(names), 300, seed=7, chunk=64)))
    naive = [naive_scores(run, np.array([i for u in row for i in members[names[u]]])) for row in drawn]
    for name in METRICS:
        assert values[name] == pytest.approx([n[name] for n in naive], rel=1e-9, nan_ok=True), name
    per_class = np.array([n["auc_per_class"] for n in naive])
    assert values["auc_per_class"] == pytest.approx(per_class, rel=1e-9, nan_ok=True)
    intervals = bootstrap([run], n_resamples=300, seed=7, chunk=64)
    for name in METRICS:
        column = np.array([n[name] for n in naive])
        expected = np.percentile(column[~np.isnan(column)], [2.5, 97.5])
        assert intervals.metrics[name] == pytest.approx(tuple(expected), rel=1e-9), name
    assert intervals.settings() == {
        "n_resamples": 300, "confidence": 0.95, "unit": "patient", "units": len(names), "seed": 7
    }  # fmt: skip


def test_a_patient_with_two_identical_images_counts_once():
    """Each image doubled under one patient: the patient bootstrap draws what the image bootstrap of the single
    images draws (same seed, same units), while resampling the doubled images one by one narrows the interval."""
    single = make_run(60, 1.0, 2)
    doubled = single.take(np.repeat(np.arange(60), 2))
    doubled.images = [f"{name}_{copy}" for name in single.images for copy in (0, 1)]
    by_patient = Predictions(
        doubled.images, doubled.prob, doubled.truth, CLASSES, dice=doubled.dice, patients=np.repeat(single.images, 2)
    )
    a, b = bootstrap([single], 400, seed=3), bootstrap([by_patient], 400, seed=3)
    assert (a.unit, a.units, b.unit, b.units) == ("image", 60, "patient", 60)
    for name in METRICS:
        assert b.metrics[name] == pytest.approx(a.metrics[name], rel=1e-12), name
    naive = bootstrap([doubled], 400, seed=3)  # 120 "independent" images
    assert naive.unit == "image" and naive.units == 120
    width = {k: (v.metrics["auc_macro"][1] - v.metrics["auc_macro"][0]) for k, v in (("p", b), ("i", naive))}
    assert width["i"] < 0.85 * width["p"]


def test_intervals_do_not_depend_on_the_order_of_the_images():
    """Several processes gather the images in another order than one: the intervals must not change."""
    run = make_run(50, 1.0, 3, patients=True)
    shuffled = run.take(np.random.default_rng(0).permutation(50))
    a, b = bootstrap([run], 200, seed=1), bootstrap([shuffled], 200, seed=1)
    assert a.metrics == b.metrics and a.auc_per_class == b.auc_per_class


def test_a_single_class_has_no_auc_and_zero_resamples_no_interval():
    run = make_run(9, 1.0, 0)
    keep = run.truth[:, 0] == 1
    assert np.isnan(scores(run.subset(keep))["auc_macro"][0])
    intervals = bootstrap([run.subset(keep)], n_resamples=50)
    assert all(math.isnan(v) for v in intervals.metrics["auc_macro"])
    assert not math.isnan(intervals.metrics["accuracy"][0])
    off = bootstrap([run], n_resamples=0)
    assert all(math.isnan(v) for pair in off.metrics.values() for v in pair) and off.n_resamples == 0


def test_interval_holds_the_estimate_narrows_with_more_images_and_is_reproducible():
    small, large = make_run(30, 1.5, 1), make_run(600, 1.5, 1)
    lo_s, hi_s = bootstrap([small], 400).metrics["auc_macro"]
    lo_l, hi_l = bootstrap([large], 400).metrics["auc_macro"]
    assert lo_l <= scores(large)["auc_macro"][0] <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 2  # ~ 1/sqrt(N): 20x the images, a 4.5x narrower interval
    assert bootstrap([small], 100, seed=5) == bootstrap([small], 100, seed=5)
    assert bootstrap([small], 100, seed=5).metrics != bootstrap([small], 100, seed=6).metrics


def test_seeds_are_pooled_by_averaging_each_resample_over_runs_aligned_by_image():
    a = make_run(40, 0.5, 2)
    b = make_run(40, 3.0, 3)
    reversed_b = b.take(np.arange(40)[::-1])
    pooled = bootstrap([a, b], 300).metrics["accuracy"]
    assert pooled == bootstrap([a, reversed_b], 300).metrics["accuracy"]  # order does not matter
    lo_a, hi_a = bootstrap([a], 300).metrics["accuracy"]
    lo_b, hi_b = bootstrap([b], 300).metrics["accuracy"]
    assert lo_a < pooled[0] < lo_b and hi_a < pooled[1] < hi_b
    other = make_run(40, 1.0, 4, images=[f"x{i}" for i in range(40)])
    with pytest.raises(ValueError, match="different images"):
        bootstrap([a, other])


def test_predictions_round_trip_through_the_report_csv(tmp_path):
    run = make_run(12, 1.0, 5, patients=True)
    path = write_predictions(
        tmp_path / "p.csv", run.images, torch.tensor(run.prob), torch.tensor(run.truth), CLASSES, run.patients, run.dice
    )
    back = read_predictions(path)
    assert back.images == run.images and back.class_names == CLASSES and back.patients == run.patients
    assert np.allclose(back.prob, run.prob, atol=1e-5) and np.array_equal(back.truth, run.truth)
    assert np.allclose(back.dice, run.dice, atol=1e-5, equal_nan=True) and np.isnan(back.dice[0])
    plain = read_predictions(
        write_predictions(tmp_path / "q.csv", run.images, *map(torch.tensor, (run.prob, run.truth)), CLASSES)
    )
    assert plain.patients is None and plain.dice is None
    (tmp_path / "bad.csv").write_text("image,label\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_predictions(tmp_path / "bad.csv")
