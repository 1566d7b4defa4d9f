"""``siim-covid``: SIIM-FISABIO-RSNA COVID-19 study-level labels joined to train/<study>/<series>/<image>.dcm."""

from __future__ import annotations

import os

from bundle.data.datalist import SECTIONS

from .fixtures import check_datalist, run, skipped_items, write_dicom, write_truncated

STUDY_HEADER = "id,Negative for Pneumonia,Typical Appearance,Indeterminate Appearance,Atypical Appearance"
BOXES = "\"[{'x': 789.28836, 'y': 582.43035, 'width': 1026.65662, 'height': 1917.30292}]\""  # as in the file
ONE_HOT = {0: "1,0,0,0", 1: "0,1,0,0", 2: "0,0,1,0", 3: "0,0,0,1"}


def siim(root):
    """Kaggle's folder of DICOMs with the two label files; a patient with two studies; broken and missing."""
    src = root / "siim-covid19-detection"
    studies, images = [STUDY_HEADER], ["id,boxes,label,StudyInstanceUID"]
    for i in range(12):
        study, series, image = f"5776db0cec{i:02d}", f"81456c9c5423{i:02d}", f"000a312787f{i:02d}"
        patient = f"patient{i // 2:03d}"  # two studies per patient
        write_dicom(src / "train" / study / series / f"{image}.dcm", patient_id=patient, view="AP", modality="DX")
        studies.append(f"{study}_study,{ONE_HOT[i % 4]}")
        boxes = "" if i % 4 == 0 else BOXES
        label = "none 1 0 0 1 1" if i % 4 == 0 else "opacity 1 789.28836 582.43035 1815.94498 2499.73327"
        images.append(f"{image}_image,{boxes},{label},{study}")
    # Two images in one study; a truncated DICOM; a study without images; an image without a study row.
    write_dicom(src / "train" / "5776db0cec00" / "81456c9c542399" / "0b0b0b0b0b99.dcm", patient_id="patient000")
    write_truncated(
        src / "train" / "5776db0cec01" / "81456c9c542301" / "0c0c0c0c0c01.dcm",
        src / "train" / "5776db0cec01" / "81456c9c542301" / "000a312787f01.dcm",
    )
    studies.append(f"ffffffffffff_study,{ONE_HOT[1]}")
    write_dicom(src / "train" / "eeeeeeeeeeee" / "1111" / "0d0d0d0d0d0d.dcm", patient_id="patient900")
    studies.append("badbadbadbad_study,1,1,0,0")
    (src / "train_study_level.csv").write_text("\n".join(studies) + "\n")
    (src / "train_image_level.csv").write_text("\n".join(images) + "\n")
    (src / "test").mkdir()
    return src


def test_siim_study_labels(tmp_path):
    src = siim(tmp_path)
    datalist, summary = run("siim-covid", src, tmp_path / "out")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["negative", "typical", "indeterminate", "atypical"]
    entries = {os.path.basename(e["image"]): e for s in SECTIONS for e in datalist[s]}
    assert len(entries) == 13
    e = entries["000a312787f01.dcm"]
    assert e["label"] == 1 and e["patient"] == "patient000" and e["study"] == "5776db0cec01"
    assert e["boxes"] == [[789.28836, 582.43035, 1026.65662, 1917.30292]] and e["view"] == "AP"
    assert "boxes" not in entries["000a312787f00.dcm"]
    assert entries["0b0b0b0b0b99.dcm"]["label"] == 0  # second image of study 00, joined by folder
    skipped = skipped_items(summary)
    assert skipped["0c0c0c0c0c01.dcm"]["kind"] == "unreadable"
    assert skipped["0d0d0d0d0d0d.dcm"]["kind"] == "no_label"
    assert skipped["train_study_level.csv line 14"]["kind"] == "missing_file"
    assert "ffffffffffff" in skipped["train_study_level.csv line 14"]["reason"]
    assert skipped["train_study_level.csv line 15"]["kind"] == "bad_row"
