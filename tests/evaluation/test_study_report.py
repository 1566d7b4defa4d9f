"""bundle.evaluation.study_report: summaries over seeds with bootstrap intervals, the two Markdown tables, the
leave-one-source-out rows and the curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bundle.evaluation import study_report
from bundle.evaluation.bootstrap import Predictions, bootstrap

CLASSES = ["x", "y"]
PROB = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
TRUTH = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=float)


def predictions(images=("a", "b", "c", "d"), prob=PROB) -> Predictions:
    return Predictions(list(images), prob, TRUTH, CLASSES)


def write_predictions(path: Path, pred: Predictions) -> Path:
    rows = ["image,label," + ",".join(f"prob_{c}" for c in CLASSES)]
    for image, p, t in zip(pred.images, pred.prob, pred.truth):
        rows.append(f"{image},{CLASSES[int(t.argmax())]}," + ",".join(str(v) for v in p))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_metric_value_reads_a_path_and_is_nan_where_there_is_no_number():
    metrics = {"auc_macro": 0.75, "lung_attention": {"lung_attention_ratio": {"mean": 1.5}}, "hm": None, "b": True}
    assert study_report.metric_value(metrics, ("auc_macro",)) == 0.75
    assert study_report.metric_value(metrics, study_report.LUNG_ATTENTION_RATIO) == 1.5
    for path in (("hm",), ("b",), ("missing",), ("auc_macro", "deeper")):
        assert math.isnan(study_report.metric_value(metrics, path)), path


def test_cell_summary_over_seeds_with_intervals_only_from_predictions():
    per_seed = {0: {"auc_macro": 0.6, "dice_lung": 0.8}, 1: {"auc_macro": 0.8, "dice_lung": None}}
    summary = study_report.cell_summary(per_seed, [predictions(), predictions()], n_resamples=50, seed=0)
    assert set(summary) == set(study_report.METRICS)
    auc = summary["auc_macro"]
    assert auc["per_seed"] == {"0": 0.6, "1": 0.8} and auc["mean"] == pytest.approx(0.7)
    assert auc["std"] == pytest.approx(0.1414, abs=1e-4) and auc["interval"][0] <= auc["interval"][1]
    dice = summary["dice_lung"]  # one seed has it: no std; no interval (the predictions hold no per-image Dice)
    assert dice == {"per_seed": {"0": 0.8, "1": None}, "mean": 0.8, "std": None, "interval": None}
    assert summary["lung_attention_ratio"]["mean"] is None
    no_predictions = study_report.cell_summary(per_seed, [], n_resamples=50, seed=0)
    assert no_predictions["auc_macro"]["interval"] is None


def test_format_entry():
    assert study_report.format_entry({"mean": None, "std": None, "interval": None}) == "n/a"
    assert study_report.format_entry({"mean": 0.5, "std": None, "interval": None}) == "0.500"
    entry = {"mean": 0.5, "std": 0.01234, "interval": [0.4, 0.6]}
    assert study_report.format_entry(entry) == "0.500 ± 0.012 [0.400, 0.600]"


def test_results_table_has_a_row_per_cell_in_the_grid_order():
    entry = {"mean": 0.5, "std": None, "interval": None}
    cell = {"metrics": {m: entry for m in study_report.METRICS}}
    cells = {"probe/scratch/0.1": cell, "finetune/scratch/1.0": cell, "finetune/simclr/0.1": cell}
    table = study_report.results_table(cells, ["finetune", "probe"], ["scratch", "simclr"], [0.1, 1.0])
    lines = table.splitlines()
    assert lines[0].count("|") == 3 + len(study_report.METRICS) + 1 and "macro AUC" in lines[0]
    rows = [line.split(" | ")[:3] for line in lines[2:]]
    assert rows == [["| finetune", "scratch", "1"], ["| finetune", "simclr", "0.1"], ["| probe", "scratch", "0.1"]]


def test_per_source_scores_leave_auc_undefined_on_a_single_class_source():
    sources = {"a": "mixed", "b": "mixed", "c": "single", "d": "single"}
    pred = predictions()
    mixed, single = (study_report.per_source_scores(pred, sources, s) for s in ("mixed", "single"))
    assert mixed == {"images": 2, "accuracy": 1.0, "true_class_prob": pytest.approx(0.85), "auc_macro": 1.0}
    assert single["auc_macro"] is None and single["accuracy"] == 0.5
    assert single["true_class_prob"] == pytest.approx(0.45)
    assert study_report.per_source_scores(pred, sources, "absent")["images"] == 0


def test_a_source_row_compares_the_held_out_model_with_the_in_distribution_one(tmp_path):
    everything = [{"image": i, "source": s} for i, s in zip("abcd", ["m", "m", "s", "s"])]
    test = [{"label": 0}, {"label": 1}, {"label": 0}]
    held_out = write_predictions(tmp_path / "held.csv", predictions(prob=PROB[:, ::-1]))  # every answer wrong
    in_dist = write_predictions(tmp_path / "in.csv", predictions())
    row = study_report.source_row("m", test, everything, held_out, in_dist, CLASSES)
    assert (row["source"], row["images"], row["classes"]) == ("m", 3, {"x": 2, "y": 1})
    assert row["in_distribution"]["accuracy"] == 1.0 and row["held_out"]["accuracy"] == 0.0
    assert row["drop"] == {"accuracy": 1.0, "true_class_prob": pytest.approx(0.7), "auc_macro": 1.0}
    table = study_report.loso_table([row, study_report.source_row("s", test, everything, None, in_dist, CLASSES)])
    lines = table.splitlines()
    assert len(lines) == 3  # the header, its rule and the one row with scores (a dry run's row has none)
    assert lines[2].startswith("| m | unguided | 3 (x 2, y 1) | 2 | 1.000 / 0.000 (1.000) |")


def test_curves_are_drawn_per_protocol_and_curve_metric(tmp_path):
    entry = {"mean": 0.5, "std": None, "interval": [0.4, 0.6]}
    cells = {f"finetune/scratch/{f}": {"metrics": {m: entry for m in study_report.METRICS}} for f in (0.1, 1.0)}
    paths = study_report.draw_curves(cells, tmp_path, ["finetune"], ["scratch"], [0.1, 1.0])
    assert paths == [tmp_path / "curves" / f"finetune_{m}.png" for m in study_report.CURVE_METRICS]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_cell_summary_resamples_patients_and_gives_lung_dice_an_interval_where_predictions_hold_them():
    pred = Predictions(list("abcd"), PROB, TRUTH, CLASSES, patients=["p", "p", "q", None], dice=[0.8, np.nan, 0.9, 0.7])
    summary = study_report.cell_summary({0: {"dice_lung": 0.8}}, [pred], n_resamples=200, seed=3)
    expected = bootstrap([pred], 200, seed=3)
    assert expected.unit == "patient" and expected.units == 3  # p, q and the image without a patient
    assert summary["dice_lung"]["interval"] == list(expected.metrics["dice_lung"])
    low, high = summary["dice_lung"]["interval"]
    assert 0.7 - 1e-9 <= low < high <= 0.9 + 1e-9  # between the lowest and the highest Dice


def test_the_leave_one_source_out_summary_gives_each_variant_its_mean_drop():
    def row(variant, accuracy, prob):
        return {"variant": variant, "drop": {"accuracy": accuracy, "true_class_prob": prob, "auc_macro": None}}

    rows = [row("unguided", 0.8, 0.5), row("unguided", 0.4, None), row("lung_guided", 0.2, 0.1), {"source": "dry"}]
    lines = study_report.loso_summary(rows).splitlines()
    assert lines[2] == "| unguided | 2 | 0.600 | 0.500 |"  # a source without a probability drop is left out of it
    assert lines[3] == "| lung_guided | 1 | 0.200 | 0.100 |" and len(lines) == 4  # a dry run's row has no drop
