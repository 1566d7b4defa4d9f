"""configs/evaluate.json on an external datalist: a ``test`` section alone is enough to evaluate a trained model."""

from __future__ import annotations

import csv
import json

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.conftest import CLASS_NAMES, ROOT

CONFIGS = [str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "evaluate.json")]
SAMPLE = ROOT / "data" / "sample"
WEIGHTS = ROOT / "models" / "model.pt"


def sample_entries(per_class: int) -> list[dict]:
    """The first ``per_class`` entries of each class of the embedded sample (its COVID-19 images have masks)."""
    entries = json.loads((SAMPLE / "datalist.json").read_text())["training"]
    return [e for k in range(len(CLASS_NAMES)) for e in [e for e in entries if e["label"] == k][:per_class]]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"shipped weights not found at {WEIGHTS}")
def test_shipped_model_on_a_test_only_datalist(tmp_path):
    entries = sample_entries(2)
    datalist = tmp_path / "external.json"
    datalist.write_text(json.dumps({"test": entries}))
    out = tmp_path / "eval"
    wf = ConfigWorkflow(
        config_file=CONFIGS,
        workflow_type="train",
        logging_file=False,
        bundle_root=str(ROOT),
        dataset_dir=str(SAMPLE),
        datalist=str(datalist),
        ckpt_dir=str(ROOT / "models"),
        output_dir=str(out),
        image_size=224,  # the size the shipped model was trained at: its lung masks are meaningful there
        batch_size=4,
        num_workers=0,
        n_overlays=1,
        show_progress=False,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == len(entries) == 8
    att = metrics["lung_attention"]
    assert att["num_images"] + att["num_undefined"] == 8 and att["ground_truth_masks"] == 2  # the COVID-19 masks
    assert 0.1 < att["lung_share"]["mean"] < 0.7 and att["lung_attention_ratio"]["num_images"] > 0
    flagged = att["attention_outside_lungs"]
    assert flagged["flagged"] <= flagged["images"] and set(flagged["per_true_class"]) == set(CLASS_NAMES)
    assert sum(v["images"] for v in flagged["per_true_class"].values()) == flagged["images"]
    assert flagged["share"] == pytest.approx(flagged["flagged"] / flagged["images"])
    for name in ("lung_attention", "lung_share", "lung_attention_ratio", "attention_outside_lungs"):
        with open(out / f"{name}_raw.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["filename"] for r in rows] == [str(SAMPLE / e["image"]) for e in entries], name
    assert len(list((out / "overlays").glob("*.png"))) == 2
    # the datalist's patients reach the report: the intervals resample them
    patients = {e.get("patient") or e["image"] for e in entries}
    assert metrics["bootstrap"] == {
        "n_resamples": 1000, "confidence": 0.95, "unit": "patient", "units": len(patients), "seed": 0
    }  # fmt: skip
    assert metrics["ci95"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci95"]["accuracy"][1]
    with open(out / "metrics.csv", newline="") as f:
        table = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(table["auc"]["value"]) == pytest.approx(metrics["auc_macro"], rel=1e-5)
    assert [int(table["support"][c]) for c in CLASS_NAMES] == [2, 2, 2, 2]


def parsed_test_split(datalist: str, configs: list[str]) -> list[str]:
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(ROOT), "dataset_dir": str(SAMPLE), "datalist": datalist})
    return [e["image"] for e in parser.get_parsed_content("splits")["test"]]


def test_evaluate_builds_the_test_split_train_left_out(tmp_path):
    datalist = tmp_path / "training_only.json"
    datalist.write_text(json.dumps({"training": sample_entries(10)}))
    evaluated = parsed_test_split(str(datalist), CONFIGS)
    assert evaluated and evaluated == parsed_test_split(str(datalist), CONFIGS[:1])


def test_no_test_section_and_no_training_images_is_one_message(tmp_path):
    datalist = tmp_path / "validation_only.json"
    datalist.write_text(json.dumps({"validation": sample_entries(1)}))
    with pytest.raises(SystemExit, match="no 'test' section and no 'training' images"):
        parsed_test_split(str(datalist), CONFIGS)


def test_evaluate_builds_its_splits_as_train_does_but_without_needing_training():
    """evaluate.json's ``splits`` is train.json's expression with ``need_training=False`` added, nothing else."""
    train = json.loads((ROOT / "configs" / "train.json").read_text())["splits"]
    evaluate = json.loads((ROOT / "configs" / "evaluate.json").read_text())["splits"]
    assert train.endswith(")") and evaluate == train[:-1] + ", need_training=False)"
