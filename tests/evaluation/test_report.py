"""metrics.json from MONAI's handlers, as configs/evaluate.json attaches them, against the hand-counted report.

``metrics_fixture.json`` is what the evaluation wrote before it used MONAI's handlers (commit 477b713, where
``classification_report`` counted everything by hand), for the seeded cases of ``cases.py``: one single-label case
whose last class never occurs (NaN AUC, NaN sensitivity) and one multi-label case, each with a third of the
images without a mask (NaN Dice) and an all-zero saliency map. ``make_metrics_fixture.py`` regenerates it from
that commit's code.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ROCAUC

from bundle.evaluation.attention import DETAILS
from bundle.evaluation.bootstrap import METRICS, Predictions, bootstrap, scores
from bundle.evaluation.metrics import ROCAUCPerClass
from bundle.evaluation.report import EvaluationReport
from bundle.networks.multitask import class_probabilities
from tests.evaluation.cases import CASES, N_IMAGES, evaluate_as_configured, make_batches

FIXTURE = json.loads(Path(__file__).with_name("metrics_fixture.json").read_text())
CHANCE_KEYS = ("lung_share", "lung_attention_ratio", "attention_outside_lungs")
INTERVAL_KEYS = ("ci95", "bootstrap")  # added after the fixture, as per_class[name]["auc_ci95"]
IMAGES = [f"images/img_{i:02d}.png" for i in range(N_IMAGES)]
PATIENTS = {path: f"patient_{i // 2}" for i, path in enumerate(IMAGES)}  # two images per patient


def assert_same(new: Any, old: Any, where: str = "metrics") -> None:
    """Same fields and values, numbers to 1e-6; metrics.json writes NaN as null."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(new) == set(old), f"{where}: fields {sorted(new)} != {sorted(old)}"
        for k in old:
            assert_same(new[k], old[k], f"{where}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), f"{where}: {new} != {old}"
        for i, (a, b) in enumerate(zip(new, old)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(old, (int, float)) and not isinstance(old, bool):
        assert isinstance(new, (int, float)) and abs(new - old) <= 1e-6, f"{where}: {new} != {old}"
        assert isinstance(new, int) == isinstance(old, int), f"{where}: {new!r} vs {old!r}"  # counts stay integers
    else:
        assert new == old, f"{where}: {new!r} != {old!r}"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("case", list(CASES))
def test_metrics_json_matches_the_hand_counted_report(case, tmp_path):
    c = CASES[case]
    engine = evaluate_as_configured(
        make_batches(c["class_names"], c["multi_label"], c["seed"]), c["class_names"], c["multi_label"], tmp_path
    )
    new = json.loads((tmp_path / "metrics.json").read_text())
    assert all(Path(p).parent == tmp_path for p in new["plots"].values())
    new["plots"] = {k: Path(p).name for k, p in new["plots"].items()}  # the fixture keeps file names only
    # the chance level came after the fixture: the lung_attention block keeps its old keys and adds these
    added = {k: new["lung_attention"].pop(k) for k in CHANCE_KEYS}
    # so did the intervals: every other key keeps its meaning and value
    assert all(new.pop(k) is not None for k in INTERVAL_KEYS)
    assert all(new["per_class"][n].pop("auc_ci95", "missing") != "missing" for n in c["class_names"])
    assert_same(new, FIXTURE["cases"][case])
    assert added["lung_share"]["num_images"] == new["lung_attention"]["num_images"]

    # MetricsSaver: the per-image details with the batch's image paths, and their summaries
    details = engine.state.metric_details
    assert set(details) == {"test_dice", *DETAILS}
    for name in details:
        rows = read_csv(tmp_path / f"{name}_raw.csv")
        assert [r["filename"] for r in rows] == [f"images/img_{i:02d}.png" for i in range(N_IMAGES)]
        for row, value in zip(rows, details[name][:, 0].tolist()):
            assert float(row["class0"]) == pytest.approx(value, abs=1e-4, nan_ok=True)  # 4 decimals
        summary = {r["class"]: r for r in read_csv(tmp_path / f"{name}_summary.csv")}
        notnans = {
            "test_dice": new["dice_images"],
            "lung_attention": new["lung_attention"]["num_images"],
            "lung_share": N_IMAGES,  # defined for the all-zero map too
            "lung_attention_ratio": added["lung_attention_ratio"]["num_images"],
            "attention_outside_lungs": added["attention_outside_lungs"]["images"],
        }[name]
        assert float(summary["class0"]["notnans"]) == notnans
    att = read_csv(tmp_path / "lung_attention_summary.csv")[0]
    assert float(att["mean"]) == pytest.approx(new["lung_attention"]["mean"], abs=1e-4)
    assert float(att["median"]) == pytest.approx(new["lung_attention"]["median"], abs=1e-4)
    # metrics.csv is the report's table (test_metrics_csv_...), not MetricsSaver's
    assert read_csv(tmp_path / "metrics.csv")[0]["metric"] == "auc"


def test_per_class_auc_keeps_every_class_where_monai_keeps_the_first():
    y = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]).float()
    p = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.1, 0.5, 0.4]])
    engine = Engine(lambda e, batch: batch)
    ROCAUCPerClass().attach(engine, "per_class")
    ROCAUC(average="none").attach(engine, "monai")
    with pytest.warns(UserWarning, match="first value"):
        state = engine.run([(p, y)])
    assert state.metrics["per_class"].tolist() == pytest.approx([0.5, 1.0, 2.5 / 3])  # class 2: one tie of three
    assert state.metrics["monai"] == 0.5  # why the subclass exists


@pytest.mark.parametrize("case", list(CASES))
def test_test_predictions_csv_holds_every_image_with_its_label_and_probabilities(case, tmp_path):
    from bundle.evaluation.report import PREDICTIONS_FILE
    from bundle.networks.multitask import class_probabilities

    c = CASES[case]
    batches = make_batches(c["class_names"], c["multi_label"], c["seed"])
    evaluate_as_configured(batches, c["class_names"], c["multi_label"], tmp_path)
    rows = read_csv(tmp_path / PREDICTIONS_FILE)
    assert [r["image"] for r in rows] == [f"images/img_{i:02d}.png" for i in range(N_IMAGES)]
    logits = torch.cat([b["logits"] for b in batches])
    prob = class_probabilities(logits, c["multi_label"])
    names = c["class_names"]
    got = torch.tensor([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    assert torch.allclose(got, prob, atol=1e-5)
    labels = torch.cat([b["label"] for b in batches])
    if c["multi_label"]:
        expected = ["|".join(n for n, v in zip(names, y) if v > 0.5) for y in labels.tolist()]
    else:
        expected = [names[k] for k in labels.tolist()]
    assert [r["label"] for r in rows] == expected


def fixture_predictions(case: str, engine: Engine, patients: dict | None = None) -> Predictions:
    """The case's test images as the bootstrap sees them: probabilities from the logits, one-hot labels, the
    evaluator's per-image Dice (NaN without a mask) and the patients; predictions by the bootstrap's own rule."""
    c = CASES[case]
    batches = make_batches(c["class_names"], c["multi_label"], c["seed"])
    prob = class_probabilities(torch.cat([b["logits"] for b in batches]), c["multi_label"]).double().numpy()
    label = torch.cat([b["label"] for b in batches])
    truth = label.double().numpy() if c["multi_label"] else torch.eye(len(c["class_names"]))[label].double().numpy()
    dice = engine.state.metric_details["test_dice"].reshape(-1).double().numpy()
    ids = None if patients is None else [patients[p] for p in IMAGES]
    return Predictions(IMAGES, prob, truth, c["class_names"], c["multi_label"], patients=ids, dice=dice)


@pytest.mark.parametrize("case", list(CASES))
def test_the_bootstrap_scores_of_the_test_set_are_the_point_estimates(case, tmp_path):
    """The intervals surround metrics.json's own numbers: the bootstrap's scores of the un-resampled test set are
    the hand-counted fixture's values (and the handlers')."""
    c = CASES[case]
    engine = evaluate_as_configured(
        make_batches(c["class_names"], c["multi_label"], c["seed"]), c["class_names"], c["multi_label"], tmp_path
    )
    got = {k: v[0] for k, v in scores(fixture_predictions(case, engine)).items()}
    old, new = FIXTURE["cases"][case], json.loads((tmp_path / "metrics.json").read_text())
    for name in METRICS:
        for expected in (old[name], new[name]):  # null in metrics.json: undefined
            assert math.isnan(got[name]) if expected is None else got[name] == pytest.approx(expected, abs=1e-6), name
    auc = [old["per_class"][n]["auc"] for n in c["class_names"]]
    assert [None if math.isnan(v) else v for v in got["auc_per_class"]] == pytest.approx(auc, abs=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_metrics_json_carries_the_patient_bootstrap_intervals(case, tmp_path):
    c = CASES[case]
    batches = make_batches(c["class_names"], c["multi_label"], c["seed"])
    engine = evaluate_as_configured(batches, c["class_names"], c["multi_label"], tmp_path, PATIENTS, seed=5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = bootstrap([fixture_predictions(case, engine, PATIENTS)], 1000, 0.95, seed=5)
    assert metrics["bootstrap"] == {
        "n_resamples": 1000, "confidence": 0.95, "unit": "patient", "units": len(set(PATIENTS.values())), "seed": 5
    }  # fmt: skip
    assert set(metrics["ci95"]) == set(METRICS)
    for name in METRICS:
        low, high = expected.metrics[name]
        assert metrics["ci95"][name] == pytest.approx([low, high], abs=1e-9), name
        assert low < high
    for name, interval in zip(c["class_names"], expected.auc_per_class):
        got = metrics["per_class"][name]["auc_ci95"]
        assert got is None if math.isnan(interval[0]) else got == pytest.approx(list(interval), abs=1e-9), name
    rows = read_csv(tmp_path / "test_predictions.csv")
    assert [r["patient"] for r in rows] == [PATIENTS[p] for p in IMAGES]
    assert sum(r["dice_lung"] != "" for r in rows) == metrics["dice_images"]


def test_final_metrics_are_every_figure_of_metrics_json_as_a_number(tmp_path):
    c = CASES["single_label"]
    batches = make_batches(c["class_names"], c["multi_label"], c["seed"])
    evaluate_as_configured(batches, c["class_names"], False, tmp_path, PATIENTS)
    report = EvaluationReport(str(tmp_path), c["class_names"])
    assert report.final_metrics() == {}  # before the report is written
    report.metrics = json.loads((tmp_path / "metrics.json").read_text())
    final = report.final_metrics()
    m = report.metrics
    assert final["auc_macro"] == m["auc_macro"] and final["num_images"] == N_IMAGES
    assert [final["hm_ci95_low"], final["hm_ci95_high"]] == m["ci95"]["hm"]
    assert final["normal/auc"] == m["per_class"]["normal"]["auc"] and final["normal/support"] > 0
    assert math.isnan(final["covid19/auc"]) and math.isnan(final["covid19/auc_ci95_low"])  # null: no covid19 image
    assert all(isinstance(v, float) for v in final.values())
    assert not {"plots", "class_names", "confusion_matrix", "bootstrap"} & set(final)


def test_without_patients_the_images_are_resampled_and_n_bootstrap_0_switches_intervals_off(tmp_path):
    c = CASES["single_label"]
    batches = make_batches(c["class_names"], c["multi_label"], c["seed"])
    evaluate_as_configured(batches, c["class_names"], False, tmp_path / "images")
    images = json.loads((tmp_path / "images" / "metrics.json").read_text())
    assert (images["bootstrap"]["unit"], images["bootstrap"]["units"]) == ("image", N_IMAGES)
    assert images["per_class"]["covid19"]["auc_ci95"] is None  # no covid19 image: no AUC, no interval
    evaluate_as_configured(batches, c["class_names"], False, tmp_path / "off", PATIENTS, n_bootstrap=0)
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert off["ci95"] == dict.fromkeys(METRICS) and off["bootstrap"]["n_resamples"] == 0
    assert all(off["per_class"][n]["auc_ci95"] is None for n in c["class_names"])
    assert off["auc_macro"] == images["auc_macro"]
    assert all(r["ci95_low"] == r["ci95_high"] == "" for r in read_csv(tmp_path / "off" / "metrics.csv"))


@pytest.mark.parametrize("case", list(CASES))
def test_metrics_csv_is_a_numeric_table_with_a_column_per_class(case, tmp_path):
    c = CASES[case]
    batches = make_batches(c["class_names"], c["multi_label"], c["seed"])
    evaluate_as_configured(batches, c["class_names"], c["multi_label"], tmp_path, PATIENTS)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    with open(tmp_path / "metrics.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    names = c["class_names"]
    assert header == ["metric", "value", "ci95_low", "ci95_high", *names]
    table = {row[0]: [float(v) if v else None for v in row[1:]] for row in rows}  # every cell a number or empty
    assert list(table) == ["auc", "accuracy", "sensitivity", "specificity", "hm", "dice_lung", "support"]
    for row, key in (("auc", "auc_macro"), ("accuracy", "accuracy"), ("hm", "hm"), ("dice_lung", "dice_lung")):
        assert table[row][:3] == pytest.approx([metrics[key], *metrics["ci95"][key]], rel=1e-5), row
    assert table["sensitivity"][0] == pytest.approx(metrics["sensitivity_macro"], rel=1e-5)
    for k, name in enumerate(names):
        cls = metrics["per_class"][name]
        assert table["auc"][3 + k] == (None if cls["auc"] is None else pytest.approx(cls["auc"], rel=1e-5))
        assert table["specificity"][3 + k] == pytest.approx(cls["specificity"], rel=1e-5)
        assert table["support"][3 + k] == cls["support"] and table["accuracy"][3 + k] is None
    assert table["support"][:3] == [N_IMAGES, None, None]


def test_the_log_line_and_the_roc_legend_give_the_intervals(tmp_path, caplog, monkeypatch):
    import bundle.plots

    drawn = {}

    def keep_texts(fig, path, dpi=None):  # the legend and title, instead of the picture
        texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        drawn[Path(path).name] = texts + [fig.axes[0].get_title()]
        bundle.plots.plt.close(fig)

    monkeypatch.setattr(bundle.plots, "_save_figure", keep_texts)
    c = CASES["single_label"]
    batches = make_batches(c["class_names"], False, c["seed"])
    with caplog.at_level("INFO", logger="bundle.evaluation.report"):
        evaluate_as_configured(batches, c["class_names"], False, tmp_path, PATIENTS)
    m = json.loads((tmp_path / "metrics.json").read_text())
    ci, per_class = m["ci95"], m["per_class"]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("test: "))
    assert line == (
        f"test: 23 images / 12 patients: AUC {m['auc_macro']:.3f} (95% CI {ci['auc_macro'][0]:.2f}-"
        f"{ci['auc_macro'][1]:.2f}), accuracy {m['accuracy']:.3f} ({ci['accuracy'][0]:.2f}-{ci['accuracy'][1]:.2f}), "
        f"HM {m['hm']:.3f} ({ci['hm'][0]:.2f}-{ci['hm'][1]:.2f}), lung Dice {m['dice_lung']:.3f} "
        f"({ci['dice_lung'][0]:.2f}-{ci['dice_lung'][1]:.2f}; {m['dice_images']} images with masks) -> "
        f"{tmp_path / 'metrics.json'}"
    )
    legend = drawn["roc.png"]
    normal = per_class["normal"]
    assert legend[0] == (
        f"normal: AUC {normal['auc']:.2f} (95% CI {normal['auc_ci95'][0]:.2f}-{normal['auc_ci95'][1]:.2f}), n=9"
    )
    assert legend[3] == "covid19: no curve (needs positive and negative images), n=0"
    assert f"macro AUC {m['auc_macro']:.3f} (95% CI {ci['auc_macro'][0]:.2f}-" in legend[-1]
    assert legend[-1].endswith("23 images / 12 patients")
