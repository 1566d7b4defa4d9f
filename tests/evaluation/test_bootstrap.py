"""bundle.evaluation.bootstrap: scores against MONAI's / the report's, and intervals that behave as they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from bundle.evaluation.bootstrap import Predictions, accuracy, bootstrap_interval, hm, macro_auc, read_predictions
from bundle.evaluation.report import write_predictions

CLASSES = ["a", "b", "c"]


def make_run(n: int, signal: float, seed: int, images: list[str] | None = None) -> Predictions:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 3
    truth = np.eye(3)[label]
    logits = rng.normal(size=(n, 3)) + signal * truth
    logits = np.round(logits, 1)  # ties, which the rank formula must count half
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Predictions(images or [f"img{i}" for i in range(n)], prob, truth, CLASSES)


def test_scores_match_monai_auc_and_plain_counts():
    run = make_run(60, 1.0, 0)
    expected = np.mean([compute_roc_auc(torch.tensor(run.prob[:, k]), torch.tensor(run.truth[:, k])) for k in range(3)])
    assert macro_auc(run.prob[None], run.truth[None])[0] == pytest.approx(expected)
    pred = run.prob.argmax(1)
    label = run.truth.argmax(1)
    assert accuracy(run.prob[None], run.truth[None])[0] == pytest.approx((pred == label).mean())
    sens = np.mean([(pred[label == k] == k).mean() for k in range(3)])
    spec = np.mean([(pred[label != k] != k).mean() for k in range(3)])
    assert hm(run.prob[None], run.truth[None])[0] == pytest.approx(2 * sens * spec / (sens + spec))


def test_a_single_class_has_no_auc():
    run = make_run(9, 1.0, 0)
    keep = run.truth[:, 0] == 1
    assert np.isnan(macro_auc(run.prob[keep][None], run.truth[keep][None])[0])
    assert all(math.isnan(v) for v in bootstrap_interval([run.subset(keep)], "auc_macro", n_resamples=50))


def test_interval_holds_the_estimate_narrows_with_more_images_and_is_reproducible():
    small, large = make_run(30, 1.5, 1), make_run(600, 1.5, 1)
    lo_s, hi_s = bootstrap_interval([small], "auc_macro", n_resamples=400)
    lo_l, hi_l = bootstrap_interval([large], "auc_macro", n_resamples=400)
    assert lo_l <= macro_auc(large.prob[None], large.truth[None])[0] <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 2  # ~ 1/sqrt(N): 20x the images, a 4.5x narrower interval
    assert bootstrap_interval([small], "accuracy", n_resamples=100) == bootstrap_interval(
        [small], "accuracy", n_resamples=100
    )


def test_seeds_are_pooled_by_averaging_each_resample_over_runs_aligned_by_image():
    a = make_run(40, 0.5, 2)
    b = make_run(40, 3.0, 3)
    reversed_b = Predictions(b.images[::-1], b.prob[::-1], b.truth[::-1], CLASSES)
    pooled = bootstrap_interval([a, b], "accuracy", n_resamples=300)
    assert pooled == bootstrap_interval([a, reversed_b], "accuracy", n_resamples=300)  # order does not matter
    lo_a, hi_a = bootstrap_interval([a], "accuracy", n_resamples=300)
    lo_b, hi_b = bootstrap_interval([b], "accuracy", n_resamples=300)
    assert lo_a < pooled[0] < lo_b and hi_a < pooled[1] < hi_b
    other = make_run(40, 1.0, 4, images=[f"x{i}" for i in range(40)])
    with pytest.raises(ValueError, match="different images"):
        bootstrap_interval([a, other])


def test_predictions_round_trip_through_the_report_csv(tmp_path):
    run = make_run(12, 1.0, 5)
    path = write_predictions(tmp_path / "p.csv", run.images, torch.tensor(run.prob), torch.tensor(run.truth), CLASSES)
    back = read_predictions(path)
    assert back.images == run.images and back.class_names == CLASSES
    assert np.allclose(back.prob, run.prob, atol=1e-5) and np.array_equal(back.truth, run.truth)
    (tmp_path / "bad.csv").write_text("image,label\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_predictions(tmp_path / "bad.csv")
