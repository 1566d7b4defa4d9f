"""Evaluation metrics against values computed by hand, through the handlers configs/evaluate.json attaches."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ROCAUC

from bundle.evaluation.metrics import ScorableMacroAUC, confusion_table, harmonic_mean, roc_curve
from tests.evaluation.cases import evaluate_as_configured, prob_batches

# MONAI counts the confusion matrix in float32, so its rates are float32: 2/3 is exactly this
TWO_THIRDS = float(np.float32(2 / 3))


def report(prob, label, class_names, tmp_path, multi_label=False) -> tuple[dict, dict]:
    """metrics.json and ``engine.state.metrics`` of predictions ``prob`` (N, C) against ``label``."""
    engine = evaluate_as_configured(prob_batches(prob, label, multi_label), class_names, multi_label, tmp_path)
    return json.loads((tmp_path / "metrics.json").read_text()), engine.state.metrics


def test_report_on_known_predictions(tmp_path):
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    label = np.array([0, 1, 1, 1])
    r, _ = report(prob, label, ["a", "b"], tmp_path)
    assert r["accuracy"] == 0.75
    assert r["confusion_matrix"] == [[1, 0], [1, 2]]
    assert r["per_class"]["b"]["sensitivity"] == TWO_THIRDS and r["per_class"]["b"]["specificity"] == 1.0
    assert r["per_class"]["a"]["sensitivity"] == 1.0 and r["per_class"]["a"]["specificity"] == TWO_THIRDS
    assert r["per_class"]["b"]["auc"] == 1.0  # every positive scores above the negative
    sens = spec = (1 + TWO_THIRDS) / 2
    assert math.isclose(r["hm"], harmonic_mean(sens, spec))
    assert r["dice_lung"] is None and r["dice_images"] == 0  # no image has a mask


def test_absent_class_gives_nan_auc_not_crash(tmp_path):
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    r, state = report(prob, np.array([0, 1]), ["a", "b", "c"], tmp_path)
    assert math.isnan(state["test_auc_per_class"][2]) and r["per_class"]["c"]["auc"] is None  # NaN -> null
    assert r["auc_macro"] == 1.0


def test_multilabel(tmp_path):
    prob = np.array([[0.9, 0.2], [0.4, 0.7]])
    r, _ = report(prob, np.array([[1, 0], [0, 1]]), ["x", "y"], tmp_path, multi_label=True)
    assert r["accuracy"] == 1.0 and r["confusion_matrix"][0] == [[1, 0], [0, 1]]


def test_confusion_tables_by_hand():
    pred = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]).float()
    truth = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]]).float()
    assert confusion_table(pred, truth) == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]  # rows: truth, columns: prediction
    assert confusion_table(pred, truth, multi_label=True) == [[[2, 0], [1, 1]], [[1, 1], [1, 1]], [[3, 1], [0, 0]]]


def test_roc_curve_endpoints_and_hm():
    fpr, tpr = roc_curve(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1]))
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(1.0, 0.5) == 2 / 3


def test_the_validation_auc_averages_the_classes_it_can_score_and_says_which_it_left_out(caplog):
    p = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.5, 0.4]])
    y = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]]).float()  # no image of the third class
    engine = Engine(lambda e, batch: batch)
    ScorableMacroAUC(["a", "b", "c"]).attach(engine, "val_auc")
    ROCAUC(average="macro").attach(engine, "monai")
    with caplog.at_level(logging.WARNING, logger="bundle.evaluation.metrics"), pytest.warns(UserWarning):
        state = engine.run([(p, y)], max_epochs=2)
    assert state.metrics["val_auc"] == 1.0  # a and b are ranked perfectly
    assert math.isnan(state.metrics["monai"])  # a NaN never improves: the best model would stay the first epoch's
    assert [r.getMessage() for r in caplog.records] == [
        "val_auc: c cannot be scored (no validation image has it, or every one has); val_auc, which picks the best "
        "model, is the mean AUC of the other 2 classes"
    ]  # once per run
    full = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]).float()
    engine = Engine(lambda e, batch: batch)
    ScorableMacroAUC().attach(engine, "val_auc")
    ROCAUC(average="macro").attach(engine, "monai")
    state = engine.run([(p, full)])
    assert state.metrics["val_auc"] == pytest.approx(state.metrics["monai"])  # every class scored: MONAI's macro
