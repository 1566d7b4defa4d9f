"""``chexpert``: CheXpert-v1.0-small train.csv / valid.csv, views and uncertainty policies."""

from __future__ import annotations

import os

import pytest

from bundle.data.datalist import SECTIONS

from .fixtures import check_datalist, run, skipped_items, write_garbage, write_image

OBS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBS)


def row(path: str, view: str, ap_pa: str, values: dict[str, str]) -> str:
    return f"{path},Female,68,{view},{ap_pa}," + ",".join(values.get(o, "") for o in OBS)


def chexpert(root):
    """CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg and the CSVs."""
    src = root / "CheXpert-v1.0-small"
    train, valid = [HEADER], [HEADER]
    for p in range(1, 11):
        for study in (1, 2):
            base = f"CheXpert-v1.0-small/train/patient{p:05d}/study{study}"
            write_image(root / base / "view1_frontal.jpg")
            values = {
                "Cardiomegaly": "1.0" if p % 2 else "0.0",
                "Edema": "-1.0" if p == 3 else "",
                "No Finding": "" if p % 2 else "1.0",
                "Support Devices": "1.0",
            }
            train.append(row(f"{base}/view1_frontal.jpg", "Frontal", "AP" if study == 1 else "PA", values))
            if study == 2:
                write_image(root / base / "view2_lateral.jpg")
                train.append(row(f"{base}/view2_lateral.jpg", "Lateral", "", values))
    for p in range(64541, 64545):
        base = f"CheXpert-v1.0-small/valid/patient{p}/study1"
        write_image(root / base / "view1_frontal.jpg")
        valid.append(row(f"{base}/view1_frontal.jpg", "Frontal", "AP", {"Edema": "1.0", "Cardiomegaly": "0.0"}))
    train.append(row("CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg", "Frontal", "AP", {}))
    write_garbage(root / "CheXpert-v1.0-small/train/patient00011/study1/view1_frontal.jpg")
    train.append(row("CheXpert-v1.0-small/train/patient00011/study1/view1_frontal.jpg", "Frontal", "AP", {}))
    train.append(
        row("CheXpert-v1.0-small/train/patient00012/study1/view1_frontal.jpg", "Frontal", "AP", {"Edema": "maybe"})
    )
    write_image(src / "train" / "patient00013" / "study1" / "view1_frontal.jpg")  # in no CSV
    (src / "train.csv").write_text("\n".join(train) + "\n")
    (src / "valid.csv").write_text("\n".join(valid) + "\n")
    return src


def test_chexpert_zeros_frontal(tmp_path):
    src = chexpert(tmp_path)
    datalist, summary = run("chexpert", src, tmp_path / "out")
    check_datalist(tmp_path / "out", datalist)
    names = datalist["class_names"]
    assert datalist["multi_label"] and names[0] == "no_finding" and names[-1] == "support_devices"
    entries = [e for s in SECTIONS for e in datalist[s]]
    assert len(entries) == 24 and not any("lateral" in e["image"] for e in entries)
    p3 = [e for e in entries if e["patient"] == "patient00003"]
    assert len(p3) == 2 and all(e["label"][names.index("edema")] == 0 for e in p3)
    assert all(e["uncertain"] == ["edema"] for e in p3)
    assert {e["view"] for e in p3} == {"AP", "PA"}
    skipped = {s["item"]: s for s in summary["skipped"]}
    assert sum(s["kind"] == "filtered" for s in summary["skipped"]) == 10
    missing = [s for s in summary["skipped"] if s["kind"] == "missing_file"]
    assert len(missing) == 1 and "patient99999" in missing[0]["reason"]
    assert skipped_items(summary)["view1_frontal.jpg"]["kind"] == "unreadable"
    assert any(s["kind"] == "bad_row" and "'maybe'" in s["reason"] for s in skipped.values())
    unlisted = [s for s in summary["skipped"] if s["kind"] == "no_label"]
    assert len(unlisted) == 1 and "patient00013" in unlisted[0]["item"]


@pytest.mark.parametrize("policy", ["ones", "ignore"])
def test_chexpert_policies_lateral_and_official_test(tmp_path, policy):
    src = chexpert(tmp_path)
    datalist, summary = run(
        "chexpert",
        tmp_path / "CheXpert-v1.0-small",
        tmp_path / "out",
        "--policy",
        policy,
        "--views",
        "frontal",
        "lateral",
        "--findings",
        "Edema",
        "Cardiomegaly",
        "--official-test",
    )
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["edema", "cardiomegaly"]
    p3 = [e for s in SECTIONS for e in datalist[s] if e["patient"] == "patient00003"]
    if policy == "ones":
        assert len(p3) == 3 and all(e["label"][0] == 1 for e in p3)
    else:
        assert not p3 and sum(s["kind"] == "uncertain" for s in summary["skipped"]) == 3
    assert {e["patient"] for e in datalist["test"]} == {f"patient{p}" for p in range(64541, 64545)}
    assert any(os.path.basename(e["image"]) == "view2_lateral.jpg" for e in datalist["training"])
    assert src.name == "CheXpert-v1.0-small"
