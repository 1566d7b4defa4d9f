"""``rsna-pneumonia``: RSNA Pneumonia Detection Challenge DICOMs, box file and detailed class info."""

from __future__ import annotations

import os

import pytest

from bundle.data.datalist import SECTIONS

from .fixtures import check_datalist, run, skipped_items, write_dicom, write_truncated

CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")


def rsna(root):
    """stage_2_train_images/<patientId>.dcm, stage_2_train_labels.csv, stage_2_detailed_class_info.csv."""
    src = root / "rsna-pneumonia-detection-challenge"
    labels = ["patientId,x,y,width,height,Target"]
    info = ["patientId,class"]
    for i in range(12):
        pid = f"0004cfab-14fd-4e49-80ba-63a80b6b{i:04d}"
        cls = CLASSES[i % 3]
        write_dicom(
            src / "stage_2_train_images" / f"{pid}.dcm",
            patient_id=pid,
            view="AP" if i % 2 else "PA",
            modality="CR",
            photometric="MONOCHROME1" if i == 0 else "MONOCHROME2",
        )
        if cls == "Lung Opacity":
            labels += [f"{pid},2.0,3.0,10.0,12.0,1", f"{pid},15.0,4.0,8.0,9.0,1"]  # two boxes: two rows
        else:
            labels.append(f"{pid},,,,,0")
        info.append(f"{pid},{cls}")
        if i % 4 == 0:
            info.append(f"{pid},{cls}")  # the real file repeats the class once per box row
    # A row whose DICOM is missing; a truncated DICOM; a DICOM with no row; a bad Target.
    labels.append("ffff0000-missing,,,,,0")
    info.append("ffff0000-missing,Normal")
    write_truncated(
        src / "stage_2_train_images" / "eeee0000-truncated.dcm",
        src / "stage_2_train_images" / "0004cfab-14fd-4e49-80ba-63a80b6b0001.dcm",
    )
    labels.append("eeee0000-truncated,,,,,0")
    info.append("eeee0000-truncated,Normal")
    write_dicom(src / "stage_2_train_images" / "dddd0000-unlisted.dcm", patient_id="dddd0000-unlisted")
    labels.append("cccc0000-badtarget,,,,,yes")
    (src / "stage_2_train_labels.csv").write_text("\n".join(labels) + "\n")
    (src / "stage_2_detailed_class_info.csv").write_text("\n".join(info) + "\n")
    (src / "stage_2_test_images").mkdir()
    (src / "stage_2_sample_submission.csv").write_text("patientId,PredictionString\n")
    return src


def test_rsna_detailed_classes_boxes_and_skipped(tmp_path):
    src = rsna(tmp_path)
    datalist, summary = run("rsna-pneumonia", src, tmp_path / "out")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["normal", "no_lung_opacity_not_normal", "lung_opacity"]
    entries = {os.path.basename(e["image"])[:-4]: e for s in SECTIONS for e in datalist[s]}
    assert len(entries) == 12
    opacity = entries["0004cfab-14fd-4e49-80ba-63a80b6b0002"]
    assert opacity["label"] == 2 and opacity["boxes"] == [[2.0, 3.0, 10.0, 12.0], [15.0, 4.0, 8.0, 9.0]]
    assert opacity["patient"] == "0004cfab-14fd-4e49-80ba-63a80b6b0002"
    assert opacity["view"] == "PA" and entries["0004cfab-14fd-4e49-80ba-63a80b6b0001"]["view"] == "AP"
    assert entries["0004cfab-14fd-4e49-80ba-63a80b6b0000"]["boxes"] == []
    skipped = skipped_items(summary)
    missing = next(s for s in summary["skipped"] if s["kind"] == "missing_file")
    assert missing["item"].startswith("stage_2_train_labels.csv line ") and "ffff0000-missing.dcm" in missing["reason"]
    assert "cannot decode dicom" in skipped["eeee0000-truncated.dcm"]["reason"]
    assert skipped["dddd0000-unlisted.dcm"]["kind"] == "no_label"
    assert any(s["kind"] == "bad_row" and "Target" in s["reason"] for s in summary["skipped"])


@pytest.mark.parametrize("cached", [False, True])
def test_rsna_target_classes_and_cached_boxes(tmp_path, cached):
    src = rsna(tmp_path)
    extra = ["--classes-from", "target"] + (
        ["--cache-dir", str(tmp_path / "out" / "png"), "--cache-size", "16"] if cached else []
    )
    datalist, summary = run("rsna-pneumonia", src, tmp_path / "out", *extra)
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["no_pneumonia", "pneumonia"]
    opacity = next(
        e for s in SECTIONS for e in datalist[s] if e["image"].endswith("6b0002.png" if cached else "6b0002.dcm")
    )
    assert opacity["label"] == 1
    if cached:  # DICOM 28 columns x 32 rows to 16 x 16: boxes scaled with the image
        assert opacity["orig_size"] == [28, 32]
        assert opacity["boxes"][0] == [round(2 * 16 / 28, 2), 1.5, round(10 * 16 / 28, 2), 6.0]
        source = os.path.join("stage_2_train_images", "0004cfab-14fd-4e49-80ba-63a80b6b0002.dcm")
        assert opacity["source_path"] == source
