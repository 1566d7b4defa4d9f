"""bundle.inference.dicom_outputs through configs/inference.json: a folder of DICOM (and a PNG with
``dicom_outputs always``) gets a valid lung SEG, findings SR and saliency SC beside the other outputs, equal to
them; a source that cannot be referenced is that row's status."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from bundle.inference.dicom_capture import read_capture_pixels
from bundle.inference.dicom_outputs import DicomOutputError
from bundle.inference.dicom_seg import read_lung_seg
from bundle.inference.dicom_source import radiograph_to_dicom
from bundle.inference.dicom_sr import read_findings_sr
from bundle.inference.writer import PredictionWriter
from tests.conftest import CLASS_NAMES, ROOT, synthetic_cxr
from tests.inference.conftest import dciodvfy

INFERENCE = str(ROOT / "configs" / "inference.json")


def run_inference(dataset: Path, out: Path, **settings) -> dict[str, dict]:
    """configs/inference.json with the shipped weights (models/model.pt) in this process; the rows by file name."""
    wf = ConfigWorkflow(
        config_file=INFERENCE,
        meta_file=str(ROOT / "configs/metadata.json"),
        logging_file=str(ROOT / "configs/logging.conf"),
        workflow_type="infer",
        bundle_root=str(ROOT),
        dataset_dir=str(dataset),
        output_dir=str(out),
        ckpt_dir=str(ROOT / "models"),
        num_workers=0,
        **settings,
    )
    wf.initialize()
    wf.run()
    wf.finalize()  # SystemExit if any image failed
    with open(out / "predictions.csv") as f:
        return {Path(r["image"]).name: r for r in csv.DictReader(f)}


def check_objects(row: dict, source: pydicom.Dataset) -> None:
    """The row's SEG, SR and SC: valid, in the source's patient and study, equal to the row's other outputs."""
    for key in ("seg_file", "sr_file", "saliency_dicom_file"):
        dciodvfy(row[key])
    seg, sr, sc = (pydicom.dcmread(row[k]) for k in ("seg_file", "sr_file", "saliency_dicom_file"))
    mask, referenced = read_lung_seg(seg)
    np.testing.assert_array_equal(mask * 255, np.asarray(Image.open(row["lung_mask_file"])))
    found = read_findings_sr(sr)
    assert mask.any() and float(row["lung_share"]) > 0  # the shipped model finds lungs: every number is defined
    assert referenced == found["source_sop_instance_uid"] == source.SOPInstanceUID
    assert found["predicted"] == row["predicted"]
    for key in [f"prob_{c}" for c in CLASS_NAMES] + ["lung_attention", "lung_share", "lung_attention_ratio"]:
        assert found.get(key) == (float(row[key]) if row[key] else None), key  # the csv's numbers exactly
    np.testing.assert_array_equal(read_capture_pixels(sc), np.asarray(Image.open(row["overlay_file"]).convert("RGB")))
    uids = {ds.SOPInstanceUID for ds in (seg, sr, sc)} | {ds.SeriesInstanceUID for ds in (seg, sr, sc)}
    assert len(uids) == 6 and not uids & {source.SOPInstanceUID, source.SeriesInstanceUID}
    for ds in (seg, sr, sc):
        assert (ds.PatientID, ds.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)


def test_dicom_folder_gets_seg_sr_and_capture(tmp_path):
    """Three sample radiographs: as DX, as CR, and a PNG that gets a DX source (``dicom_outputs always``)."""
    data = tmp_path / "data"
    data.mkdir()
    pngs = sorted((ROOT / "data" / "sample" / "images").glob("*.png"))[:3]
    pixels = [np.asarray(Image.open(p).convert("L")) for p in pngs]
    sources = {
        "a.dcm": radiograph_to_dicom(pixels[0], data / "a.dcm", patient_id="PA", modality="DX"),
        "b.dcm": radiograph_to_dicom(pixels[1][:, 16:], data / "b.dcm", patient_id="PB", modality="CR"),  # not square
    }
    Image.fromarray(pixels[2]).save(data / "c.png")
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": ["a.dcm", "b.dcm", {"image": "c.png", "patient": "kermany:42"}]}))
    out = tmp_path / "out"
    rows = run_inference(data, out, datalist=str(datalist), dicom_outputs="always")
    for name, source in sources.items():
        check_objects(rows[name], source)
    assert rows["a.dcm"]["seg_file"] == str(out / "dicom" / "a_seg.dcm")
    converted = pydicom.dcmread(out / "dicom" / "c_source.dcm")  # the PNG's DX source, which its objects reference
    assert dciodvfy(out / "dicom" / "c_source.dcm") == []
    assert converted.PatientID == "kermany:42" and list(converted.ImageType) == ["DERIVED", "SECONDARY"]
    check_objects(rows["c.png"], converted)
    written = {p.name for p in (out / "dicom").iterdir()}
    assert written == {f"{n}_{k}.dcm" for n in "abc" for k in ("seg", "sr", "saliency")} | {"c_source.dcm"}


def writer_row(writer: PredictionWriter, image: Path) -> dict:
    row = {**dict.fromkeys(writer.fields), "image": str(image), "status": "ok", "predicted": CLASS_NAMES[1]}
    return {**row, **{f"prob_{c}": 0.25 for c in CLASS_NAMES}, "lung_attention": 0.5, "lung_share": 0.25}


def test_capture_without_overlays_and_a_source_without_study(tmp_path):
    image, mask = synthetic_cxr(32, 32, seed=4)
    radiograph_to_dicom(image, tmp_path / "a.dcm", patient_id="P1")
    writer = PredictionWriter(str(tmp_path / "out"), CLASS_NAMES, write_overlays=False, write_masks=False)
    prob, lung = np.array([0.1, 0.6, 0.2, 0.1]), mask.astype(np.float32)
    row = writer_row(writer, tmp_path / "a.dcm")
    writer._write_files(row, "a", (32, 32), lung, np.ones((8, 8), np.float32), prob)
    assert row["overlay_file"] is None and row["lung_mask_file"] is None  # none asked for, but the SC and SEG are
    assert read_capture_pixels(pydicom.dcmread(row["saliency_dicom_file"])).shape[1] == 512
    np.testing.assert_array_equal(read_lung_seg(pydicom.dcmread(row["seg_file"]))[0], mask)
    assert not list((tmp_path / "out").rglob("overlay.png"))  # the picture was drawn in a temporary folder
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    del ds.StudyInstanceUID
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(DicomOutputError, match=r"cannot write DICOM SEG and SR .*b.dcm has no StudyInstanceUID"):
        writer._write_files(writer_row(writer, tmp_path / "b.dcm"), "b", (32, 32), lung, None, prob)
    png = tmp_path / "c.png"
    Image.fromarray(image).save(png)
    plain = writer_row(writer, png)
    writer._write_files(plain, "c", (32, 32), lung, None, prob)  # "auto": no DICOM for a PNG
    assert plain["seg_file"] is None and not (tmp_path / "out" / "dicom" / "c_source.dcm").exists()
