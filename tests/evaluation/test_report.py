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
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ROCAUC

from bundle.evaluation.attention import DETAILS
from bundle.evaluation.metrics import ROCAUCPerClass
from tests.evaluation.cases import CASES, N_IMAGES, evaluate_as_configured, make_batches

FIXTURE = json.loads(Path(__file__).with_name("metrics_fixture.json").read_text())
CHANCE_KEYS = ("lung_share", "lung_attention_ratio", "attention_outside_lungs")


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
    saved = {line.split(",")[0] for line in (tmp_path / "metrics.csv").read_text().splitlines()}
    assert saved == {f"test_{m}" for m in ("auc", "auc_per_class", "accuracy", "sensitivity", "specificity", "dice")}


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
