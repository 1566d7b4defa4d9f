"""``dicom``: a hospital export of DICOM files with a label CSV keyed by AccessionNumber."""

from __future__ import annotations

import os

from bundle.data.datalist import SECTIONS

from .fixtures import check_datalist, run, skipped_items, write_dicom, write_truncated


def hospital(root):
    """PACS-style folders (no suffixes, UID file names), laterals, a CT, a truncated file, a text file."""
    src = root / "export"
    rows = ["AccessionNumber,finding,effusion,cardiomegaly"]
    for p in range(10):
        for study in range(2):
            acc = f"ACC{p:03d}{study}"
            folder = src / f"PAT{p:03d}" / f"STUDY{study}"
            write_dicom(
                folder / f"1.2.826.0.1.{p}.{study}.1", patient_id=f"MRN{p:05d}", view="PA", accession=acc, modality="CR"
            )
            write_dicom(
                folder / f"1.2.826.0.1.{p}.{study}.2", patient_id=f"MRN{p:05d}", view="LL", accession=acc, modality="CR"
            )
            finding = ("normal", "pneumonia", "effusion")[(p + study) % 3]
            rows.append(f"{acc},{finding},{int(finding == 'effusion')},{p % 2}")
    write_dicom(src / "PAT900" / "ct.dcm", patient_id="MRN00900", view=None, modality="CT", accession="ACC9000")
    write_dicom(src / "PAT901" / "noview.dcm", patient_id="MRN00901", view=None, accession="ACC9010")
    write_dicom(src / "PAT902" / "nopatient.dcm", patient_id="", view="AP", accession="ACC9020")
    rows += ["ACC9010,normal,0,0", "ACC9020,pneumonia,0,1"]
    write_truncated(src / "PAT903" / "IMG0001", src / "PAT000" / "STUDY0" / "1.2.826.0.1.0.0.1")
    rows.append("ACC7777,normal,0,0")  # no such study
    (src / "PAT904").mkdir()
    (src / "PAT904" / "notes.txt").write_text("export log")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return src, labels


def test_dicom_single_label(tmp_path):
    src, labels = hospital(tmp_path)
    datalist, summary = run("dicom", src, tmp_path / "out", "--labels", str(labels), "--label-column", "finding")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["normal", "effusion", "pneumonia"]
    entries = {os.path.basename(e["image"]): e for s in SECTIONS for e in datalist[s]}
    assert len(entries) == 21
    e = entries["1.2.826.0.1.4.1.1"]
    assert e["patient"] == "MRN00004" and e["view"] == "PA" and e["label_name"] == "effusion"
    assert entries["nopatient.dcm"]["patient"].startswith("study:")
    skipped = skipped_items(summary)
    assert "ViewPosition 'LL'" in skipped["1.2.826.0.1.4.1.2"]["reason"]
    assert "Modality 'CT'" in skipped["ct.dcm"]["reason"]
    assert "--keep-unknown-view" in skipped["noview.dcm"]["reason"]
    assert skipped["IMG0001"]["kind"] == "unreadable"
    assert skipped["notes.txt"]["kind"] == "not_dicom"
    assert skipped["labels.csv line 24"]["kind"] == "missing_file"
    assert "ACC7777" in skipped["labels.csv line 24"]["reason"]
    assert any("StudyInstanceUID" in n for n in summary["notes"])


def test_dicom_multilabel_and_unlabelled(tmp_path):
    src, labels = hospital(tmp_path)
    datalist, _ = run(
        "dicom",
        src,
        tmp_path / "out",
        "--labels",
        str(labels),
        "--label-columns",
        "effusion",
        "cardiomegaly",
        "--keep-unknown-view",
    )
    check_datalist(tmp_path / "out", datalist)
    assert datalist["multi_label"] and datalist["class_names"] == ["effusion", "cardiomegaly"]
    entries = {os.path.basename(e["image"]): e for s in SECTIONS for e in datalist[s]}
    assert entries["noview.dcm"]["label"] == [0, 0] and len(entries) == 22
    datalist, summary = run("dicom", src, tmp_path / "out2")
    assert datalist["class_names"] == [] and summary["train_command"] is None
    assert all("label" not in e for s in SECTIONS for e in datalist[s])
    assert summary["images"] == 21
