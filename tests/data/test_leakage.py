"""Leakage between splits: an image, a patient or a byte-identical copy shared by two splits is named by entry;
evaluation refuses it unless ``allow_split_overlap``, training warns once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bundle.data.datalist import prepare_splits
from bundle.data.leakage import SHOWN, check_leakage, describe_overlaps, find_overlaps
from tests.conftest import CLASS_NAMES, ROOT, synthetic_cxr, write_dataset
from tests.helpers import bundle_in_process, run_bundle

TRAIN = str(ROOT / "configs" / "train.json")
EVALUATE = f"['{ROOT / 'configs' / 'train.json'}','{ROOT / 'configs' / 'evaluate.json'}']"
SMALL = ["--image_size", "32", "--batch_size", "4", "--num_workers", "0", "--amp", "false"]


def leaky_datalist(root: Path, kinds: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """A datalist of synthetic images whose ``test`` section shares one thing of each of ``kinds`` with ``training``
    (``image``: the same file; ``patient``: another image of a training patient; ``copy``: a byte-identical copy
    under another name, of another patient); returns its path and, per kind, the training entry it shares with."""
    write_dataset(root, n_per_class=4)
    entries = json.loads((root / "datalist.json").read_text())["training"]
    # patients p<label>_0 (images 0, 1) train, p<label>_1 (images 2, 3) are tested: no overlap yet
    training = [e for e in entries if e["patient"].endswith("_0")]
    test = [e for e in entries if e["patient"].endswith("_1")]
    shared = {}
    if "image" in kinds:
        test.append(dict(training[0], patient="elsewhere"))
        shared["image"] = "training[0]"
    if "patient" in kinds:
        Image.fromarray(synthetic_cxr(40, 56, seed=999)[0]).save(root / "images" / "later_visit.png")  # new pixels
        test.append({"image": "images/later_visit.png", "label": 1, "patient": training[3]["patient"]})
        shared["patient"] = "training[2]"  # the patient's first entry names it
    if "copy" in kinds:
        shutil.copy(root / training[2]["image"], root / "images" / "renamed.png")
        test.append({"image": "images/renamed.png", "label": training[2]["label"], "patient": "newcomer"})
        shared["copy"] = "training[2]"
    path = root / "leaky.json"
    path.write_text(json.dumps({"training": training, "test": test}))
    return path, shared


def test_each_kind_is_found_and_named_by_entry():
    train = [{"_id": "training[0]", "image": "/a.png", "patient": "p1"}, {"_id": "training[1]", "image": "/b.png"}]
    test = [{"_id": "test[0]", "image": "/a.png"}, {"_id": "test[1]", "image": "/c.png", "patient": "p1"}]
    test.append({"_id": "test[2]", "image": "/d.png"})
    overlaps = find_overlaps({"training": train, "validation": [], "test": test}, {"/b.png": "h", "/d.png": "h"})
    assert [(o.kind, o.key) for o in overlaps] == [("image", "/a.png"), ("patient", "p1"), ("content", "h")]
    summary, lines = describe_overlaps(overlaps)
    assert summary == "1 image, 1 patient and 1 copy"
    assert lines == [
        "test[0] (/a.png) and training[0] (/a.png): same image",
        "test[1] (/c.png) and training[0] (/a.png): same patient p1",
        "test[2] (/d.png) and training[1] (/b.png): same pixels (a copy under another name)",
    ]


def test_an_entry_split_off_another_section_says_where_it_went():
    splits = {"training": [{"_id": "training[0]", "image": "/a.png"}], "validation": [], "test": []}
    splits["test"] = [{"_id": "training[5]", "image": "/a.png"}]
    (overlap,) = find_overlaps(splits)
    assert describe_overlaps([overlap])[1] == [
        "training[5] (/a.png, in the test split) and training[0] (/a.png): same image"
    ]


def test_many_overlaps_are_counted_and_the_first_few_listed(caplog):
    train = [{"_id": f"training[{i}]", "image": f"/{i}.png", "patient": f"p{i}"} for i in range(40)]
    test = [{"_id": f"test[{i}]", "image": f"/{i}.png", "patient": f"p{i}"} for i in range(40)]
    with caplog.at_level("WARNING", logger="bundle.data.leakage"):
        overlaps = check_leakage({"training": train, "validation": [], "test": test}, None, "d.json", refuse=False)
    assert len(overlaps) == 80
    (record,) = caplog.records  # one warning, with the counts
    assert record.levelname == "WARNING" and "the splits share 40 images and 40 patients" in record.message
    assert record.message.count("\n  - ") == SHOWN + 1 and f"... and {80 - SHOWN} more" in record.message


def test_splits_apart_say_nothing(caplog):
    splits = {"training": [{"image": "/a.png", "patient": "p"}], "validation": [], "test": [{"image": "/b.png"}]}
    with caplog.at_level("WARNING"):
        assert check_leakage(splits, {"/a.png": "x", "/b.png": "y"}, "d.json", refuse=True) == []
    assert not caplog.records


def test_split_off_sections_never_share_a_patient(tmp_path):
    """The splits made from ``training`` keep patients apart: a plain datalist passes evaluation's refusal."""
    write_dataset(tmp_path, n_per_class=8)
    splits = prepare_splits(tmp_path / "datalist.json", tmp_path, CLASS_NAMES, need_training=False)
    assert splits["test"] and not find_overlaps(splits)


@pytest.mark.parametrize("kind", ["image", "patient", "copy"])
def test_evaluation_refuses_a_shared_kind_naming_both_entries(tmp_path, kind):
    datalist, shared = leaky_datalist(tmp_path / "data", (kind,))
    args = ["--dataset_dir", str(tmp_path / "data"), "--datalist", str(datalist), "--ckpt_dir", str(tmp_path / "m")]
    proc = bundle_in_process("run", "--config_file", EVALUATE, *args, "--output_dir", str(tmp_path / "e"), *SMALL)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    wording = {"image": "same image", "patient": "same patient p", "copy": "same pixels"}[kind]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    assert line.startswith("  - test[") and f"and {shared[kind]} (" in line and wording in line
    assert "--allow_split_overlap true" in proc.stderr and str(datalist) in proc.stderr


def test_training_warns_once_and_evaluation_accepts_with_the_id(tmp_path):
    """Real commands: training logs one WARNING with the counts and trains; evaluation stops, then evaluates with
    ``--allow_split_overlap true``. The memory cache logs its progress (the output is a pipe, not a terminal)."""
    datalist, shared = leaky_datalist(tmp_path / "data", ("image", "patient", "copy"))
    args = ["--dataset_dir", str(tmp_path / "data"), "--datalist", str(datalist), "--ckpt_dir", str(tmp_path / "m")]
    train = run_bundle("run", "--config_file", TRAIN, *args, "--output_dir", str(tmp_path / "t"), "--max_epochs", "1",
                       *SMALL)  # fmt: skip
    # the tiny validation split also lacks classes, which val_auc says once (bundle.evaluation.metrics)
    warnings = [line for line in train.stdout.splitlines() if "WARNING" in line and "val_auc:" not in line]
    assert len(warnings) == 1 and "the splits share 1 image, 1 patient and 1 copy" in warnings[0]
    assert "Traceback" not in train.stdout + train.stderr
    assert "caching " in train.stdout and "images (100%)" in train.stdout
    evaluate = [*args, "--output_dir", str(tmp_path / "e"), "--n_overlays", "0", *SMALL]
    refused = bundle_in_process("run", "--config_file", EVALUATE, *evaluate)
    assert refused.returncode == 1 and "the splits share 1 image, 1 patient and 1 copy" in refused.stderr
    assert all(f"and {entry} (" in refused.stderr for entry in shared.values())
    allowed = run_bundle("run", "--config_file", EVALUATE, *evaluate, "--allow_split_overlap", "true")
    assert "the splits share 1 image, 1 patient and 1 copy" in allowed.stdout
    tested = len(json.loads(datalist.read_text())["test"])
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["num_images"] == tested == 11
