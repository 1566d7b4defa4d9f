"""Datalists: checks name every bad entry; splits are patient-grouped, stratified and reproducible."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bundle.data.datalist import DatalistError, check_entries, list_images, load_datalist, prepare_splits
from bundle.data.splits import label_subset, split_by_patient
from tests.conftest import CLASS_NAMES, SHARED_CXR, requires_shared, write_dataset


def entries_for(n_patients_per_class: int, images_per_patient: int = 2, classes: int = 4) -> list[dict]:
    return [
        {"image": f"/x/{c}_{p}_{i}.png", "label": c, "patient": f"{c}-{p}"}
        for c in range(classes)
        for p in range(n_patients_per_class)
        for i in range(images_per_patient)
    ]


def patients(entries):
    return {e["patient"] for e in entries}


def test_split_groups_patients_and_stratifies():
    entries = entries_for(20)
    train, val, test = split_by_patient(entries, 0.2, 0.2, seed=1)
    assert len(train) + len(val) + len(test) == len(entries)
    assert (
        not patients(train) & patients(val)
        and not patients(train) & patients(test)
        and not patients(val) & patients(test)
    )
    for part in (val, test):
        assert Counter(e["label"] for e in part) == dict.fromkeys(range(4), 8)  # 4 patients x 2 images per class
    again = split_by_patient(entries, 0.2, 0.2, seed=1)
    assert [e["image"] for e in again[2]] == [e["image"] for e in test]
    other = split_by_patient(entries, 0.2, 0.2, seed=2)
    assert [e["image"] for e in other[2]] != [e["image"] for e in test]


def test_label_subset_fraction_stratified_grouped():
    entries = entries_for(30, images_per_patient=1)
    kept = label_subset(entries, 0.1, seed=0)
    assert Counter(e["label"] for e in kept) == dict.fromkeys(range(4), 3)
    grouped = entries_for(10, images_per_patient=2)
    kept = label_subset(grouped, 0.2, seed=0)
    by_patient = Counter(e["patient"] for e in kept)
    assert set(by_patient.values()) == {2}  # whole patients only
    assert label_subset(grouped, 1.0, seed=0) == grouped
    assert label_subset(grouped, 0.2, seed=0) == kept
    with pytest.raises(ValueError):
        label_subset(grouped, 0.0, seed=0)


def test_every_class_keeps_a_patient_at_tiny_fraction():
    kept = label_subset(entries_for(3), 0.01, seed=0)
    assert {e["label"] for e in kept} == {0, 1, 2, 3}


def test_check_entries_reports_each_problem(tiny_dataset):
    sections = load_datalist(tiny_dataset / "datalist.json", tiny_dataset)
    entries = sections["training"][:5]
    entries[0]["image"] = str(tiny_dataset / "images" / "nope.png")
    (tiny_dataset / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    entries[1]["image"] = str(tiny_dataset / "images" / "corrupt.png")
    entries[2]["label"] = 7
    from PIL import Image

    Image.new("L", (10, 10)).save(tiny_dataset / "masks" / "small.png")
    entries[4]["mask"] = str(tiny_dataset / "masks" / "small.png")
    problems = check_entries(entries, num_classes=4)
    assert len(problems) == 4
    assert "training[0]" in problems[0] and "nope.png" in problems[0] and "file not found" in problems[0]
    assert "training[1]" in problems[1] and "cannot decode" in problems[1]
    assert "training[2]" in problems[2] and "label 7 out of range" in problems[2]
    assert "training[4]" in problems[3] and "mask shape (10, 10) differs from image shape (40, 56)" in problems[3]
    assert check_entries([], 4) == ["datalist has no entries"]


def test_multilabel_checks():
    assert check_entries([{"image": __file__, "label": [0, 1, 1]}], 3, multi_label=True, read_images=False) == []
    bad = check_entries([{"image": __file__, "label": [0, 2]}], 3, multi_label=True, read_images=False)
    assert "list of 3 values" in bad[0]


def test_prepare_splits_stops_with_one_message(tiny_dataset):
    path = tiny_dataset / "datalist.json"
    content = json.loads(path.read_text())
    content["training"][3]["image"] = "images/missing.png"
    content["training"][5]["label"] = -2
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as err:
        prepare_splits(path, tiny_dataset, CLASS_NAMES)
    message = str(err.value)
    assert (
        "2 problem(s)" in message and "training[3]" in message and "missing.png" in message and "training[5]" in message
    )


def test_prepare_splits_uses_given_sections(tmp_path):
    data = tmp_path / "d"
    path = write_dataset(data, n_per_class=6)
    content = json.loads(path.read_text())
    content["test"] = content["training"][:4]
    content["training"] = content["training"][4:]
    path.write_text(json.dumps(content))
    splits = prepare_splits(path, data, CLASS_NAMES, val_fraction=0.2, seed=0)
    assert [e["_id"] for e in splits["test"]] == [f"test[{i}]" for i in range(4)]
    assert len(splits["validation"]) > 0
    assert not patients(splits["training"]) & patients(splits["validation"])


def test_label_fraction_applies_to_training_only(tiny_dataset):
    full = prepare_splits(tiny_dataset / "datalist.json", tiny_dataset, CLASS_NAMES, seed=3)
    part = prepare_splits(tiny_dataset / "datalist.json", tiny_dataset, CLASS_NAMES, seed=3, label_fraction=0.5)
    assert [e["image"] for e in part["test"]] == [e["image"] for e in full["test"]]
    assert [e["image"] for e in part["validation"]] == [e["image"] for e in full["validation"]]
    assert 0 < len(part["training"]) < len(full["training"])


def test_bad_datalist_files(tmp_path):
    with pytest.raises(DatalistError, match="not found"):
        load_datalist(tmp_path / "none.json", tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DatalistError, match="not valid JSON"):
        load_datalist(tmp_path / "bad.json", tmp_path)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(DatalistError, match="no section"):
        load_datalist(tmp_path / "empty.json", tmp_path)


def test_list_images(tiny_dataset):
    entries = list_images(tiny_dataset / "images")
    assert len(entries) == 32 and all(e["image"].endswith(".png") for e in entries)


@requires_shared
def test_real_collection_split_has_no_shared_patient():
    splits = prepare_splits(SHARED_CXR / "datalist.json", SHARED_CXR, CLASS_NAMES, seed=0, label_fraction=0.1)
    tr, va, te = (patients(splits[k]) for k in ("training", "validation", "test"))
    assert not (tr & va or tr & te or va & te)
    assert {e["label"] for e in splits["test"]} == {0, 1, 2, 3}
    assert 0.07 < len(splits["training"]) / 567 < 0.13  # about 10 % of the 567 training images


def test_labels_that_do_not_fit_the_settings_give_one_sentence():
    """The datalist as a whole against class_names and multi_label: one line naming the setting to change."""
    from bundle.data.datalist import labels_against_classes

    names = ["normal", "pneumonia"]
    ints = [{"label": 0}, {"label": 1}, {"label": None}]
    lists = [{"label": [1, 0]}, {"label": [0, 1]}]
    assert labels_against_classes(ints, names, multi_label=False) is None
    assert labels_against_classes(lists, names, multi_label=True) is None
    assert "multi_label is true, but every label is a single class index" in labels_against_classes(
        ints, names, multi_label=True
    )
    assert "set multi_label true" in labels_against_classes(lists, names, multi_label=False)
    assert "labels are lists of 3 values, but class_names has 2 names" in labels_against_classes(
        [{"label": [1, 0, 0]}], names, multi_label=True
    )
    assert "labels go up to class index 3, but class_names has 2 names" in labels_against_classes(
        [{"label": 3}, {"label": 0}], names, multi_label=False
    )
    assert labels_against_classes([{"label": None}], names, multi_label=True) is None  # no labels: nothing to say


def test_evaluation_takes_a_test_only_datalist(tmp_path):
    data = tmp_path / "d"
    path = write_dataset(data, n_per_class=2)
    entries = json.loads(path.read_text())["training"]
    path.write_text(json.dumps({"test": entries}))
    with pytest.raises(SystemExit, match="validation split is empty"):
        prepare_splits(path, data, CLASS_NAMES)  # training still needs its own images
    splits = prepare_splits(path, data, CLASS_NAMES, need_training=False)
    assert splits["training"] == [] and splits["validation"] == []
    assert [e["_id"] for e in splits["test"]] == [f"test[{i}]" for i in range(len(entries))]
    path.write_text(json.dumps({"training": entries, "test": []}))
    with pytest.raises(SystemExit, match="'test' section is empty"):
        prepare_splits(path, data, CLASS_NAMES, need_training=False)


def test_evaluation_splits_a_training_only_datalist_as_training_did(tiny_dataset):
    path = tiny_dataset / "datalist.json"
    for seed in (0, 3):
        train = prepare_splits(path, tiny_dataset, CLASS_NAMES, seed=seed, label_fraction=0.5)
        evaluate = prepare_splits(path, tiny_dataset, CLASS_NAMES, seed=seed, label_fraction=0.5, need_training=False)
        assert [e["image"] for e in evaluate["test"]] == [e["image"] for e in train["test"]] != []


def test_evaluation_without_test_section_or_training_images_fails_once(tmp_path):
    data = tmp_path / "d"
    path = write_dataset(data, n_per_class=2)
    path.write_text(json.dumps({"validation": json.loads(path.read_text())["training"]}))
    with pytest.raises(SystemExit) as err:
        prepare_splits(path, data, CLASS_NAMES, need_training=False)
    message = str(err.value)
    assert str(path) in message and "no 'test' section and no 'training' images" in message
    assert message.count("\n") == 0  # one sentence, not a list of problems
    with pytest.raises(DatalistError, match="no 'test' section"):
        prepare_splits(path, data, CLASS_NAMES, need_training=False, exit_on_error=False)
