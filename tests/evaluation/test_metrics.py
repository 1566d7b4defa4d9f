"""Evaluation metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np

from bundle.evaluation.metrics import classification_report, harmonic_mean, roc_curve


def test_report_on_known_predictions():
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    label = np.array([0, 1, 1, 1])
    r = classification_report(prob, label, ["a", "b"])
    assert r["accuracy"] == 0.75
    assert r["confusion_matrix"] == [[1, 0], [1, 2]]
    assert r["per_class"]["b"]["sensitivity"] == 2 / 3 and r["per_class"]["b"]["specificity"] == 1.0
    assert r["per_class"]["a"]["sensitivity"] == 1.0 and r["per_class"]["a"]["specificity"] == 2 / 3
    assert r["per_class"]["b"]["auc"] == 1.0  # every positive scores above the negative
    sens = spec = (1 + 2 / 3) / 2
    assert math.isclose(r["hm"], harmonic_mean(sens, spec))


def test_absent_class_gives_nan_auc_not_crash():
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    r = classification_report(prob, np.array([0, 1]), ["a", "b", "c"])
    assert math.isnan(r["per_class"]["c"]["auc"]) and r["auc_macro"] == 1.0


def test_multilabel():
    prob = np.array([[0.9, 0.2], [0.4, 0.7]])
    r = classification_report(prob, np.array([[1, 0], [0, 1]]), ["x", "y"], multi_label=True)
    assert r["accuracy"] == 1.0 and r["confusion_matrix"][0] == [[1, 0], [0, 1]]


def test_roc_curve_endpoints_and_hm():
    fpr, tpr = roc_curve(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1]))
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(1.0, 0.5) == 2 / 3
