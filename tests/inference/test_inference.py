"""configs/inference.json and bundle.inference: mixed-format folders, bad files, outputs, lung attention in evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from bundle.data.transforms import LoadCXRd
from bundle.inference.inputs import list_inputs
from tests.conftest import CLASS_NAMES, ROOT, SHARED_CXR, requires_shared, run_bundle, synthetic_cxr

SIZE = "64"  # FlexibleUNet needs a multiple of 32
INFERENCE = str(ROOT / "configs" / "inference.json")
EVALUATE = f"['{ROOT / 'configs' / 'train.json'}','{ROOT / 'configs' / 'evaluate.json'}']"


def write_dicom(pixels: np.ndarray, path: Path, monochrome1: bool = False) -> None:
    """A 12-bit DX DICOM of ``pixels`` (uint8): MONOCHROME2, or MONOCHROME1 with inverted stored values; with a
    patient, study and series, which the DICOM outputs reference."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.PatientName = (
        generate_uid(),
        generate_uid(),
        "P1",
        "A^B",
    )
    stored = pixels.astype(np.uint16) * 16
    if monochrome1:
        stored = 4095 - stored
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """One non-square picture as PNG, DICOM (MONOCHROME2 and 1) and NIfTI, plus a corrupt PNG and a text file."""
    folder = tmp_path_factory.mktemp("cxr")
    image, _ = synthetic_cxr(60, 44, seed=3, label=2)
    Image.fromarray(image).save(folder / "a.png")
    write_dicom(image, folder / "a.dcm")
    (folder / "sub").mkdir()
    write_dicom(image, folder / "sub" / "a_mono1")  # no suffix, found by the DICM preamble
    nib.save(nib.Nifti1Image(image.T.astype(np.float32), np.diag([0.5, 0.5, 1, 1])), folder / "a.nii.gz")
    Image.fromarray(synthetic_cxr(40, 40, seed=4)[0]).save(folder / "b.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"skipped")
    return folder


def read_rows(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {Path(r["image"]).name: r for r in csv.DictReader(f)}


def test_list_inputs_folder_file_datalist(mixed_folder, tmp_path):
    entries = list_inputs(mixed_folder)
    names = {Path(e["image"]).name: e["name"] for e in entries}
    assert ".hidden.png" not in names and "notes.txt" in names  # unsupported files are listed, to be reported
    assert names["a.png"] == "a_png" and names["a.dcm"] == "a_dcm" and names["a.nii.gz"] == "a_nii_gz"
    assert names["a_mono1"] == "sub__a_mono1" and names["b.png"] == "b"
    assert len({e["name"] for e in entries}) == len(entries)
    assert [e["image"] for e in list_inputs(mixed_folder, recursive=False, max_images=2)] == [
        str(mixed_folder / "a.dcm"),
        str(mixed_folder / "a.nii.gz"),
    ]
    assert list_inputs(mixed_folder / "b.png")[0]["name"] == "b"
    assert not any("sub" in e["image"] for e in list_inputs(mixed_folder, exclude=[mixed_folder / "sub"]))
    datalist = tmp_path / "list.json"
    datalist.write_text(
        json.dumps(
            {"training": [{"image": "b.png", "mask": "m.png", "label": 0}], "test": ["a.png", {"image": "b.png"}]}
        )
    )
    entries = list_inputs(mixed_folder, datalist)
    assert [Path(e["image"]).name for e in entries] == ["b.png", "a.png"] and entries[0]["mask"].endswith("m.png")
    with pytest.raises(SystemExit, match="no such folder"):
        list_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="nothing to process"):
        list_inputs(tmp_path / "empty")


def test_safe_loader_never_raises(mixed_folder):
    load = LoadCXRd(on_error="status")
    good = load({"image": str(mixed_folder / "a.png"), "mask": str(mixed_folder / "b.png")})  # mask of wrong size
    assert good["status"] == "ok" and good["orig_shape"].tolist() == [60, 44] and good["image"].shape == (1, 60, 44)
    assert float(good["has_mask"]) == 0  # the mis-sized mask is dropped, not fatal
    cases = (("broken.png", "cannot decode"), ("notes.txt", "unsupported file type"), ("nope", "not found"))
    for name, reason in cases:
        bad = load({"image": str(mixed_folder / name)})
        assert reason in bad["status"] and bad["image"].shape == (1, 2, 2) and bad["orig_shape"].tolist() == [0, 0]


def test_inference_run_mixed_folder_with_bad_files(mixed_folder, weights, tmp_path):
    out = tmp_path / "out"
    proc = run_bundle(
        "run",
        "--config_file",
        INFERENCE,
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(mixed_folder),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(weights),
        "--image_size",
        SIZE,
        "--batch_size",
        "3",
        "--num_workers",
        "2",
        cwd=tmp_path,  # any working directory: the config path is absolute and bundle_root is given
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "2 of 7 images failed" in text and "predictions.csv" in text and "Traceback" not in text
    rows = read_rows(out / "predictions.csv")
    assert set(rows) == {"a.png", "a.dcm", "a_mono1", "a.nii.gz", "b.png", "broken.png", "notes.txt"}
    assert "cannot decode" in rows["broken.png"]["status"] and "unsupported" in rows["notes.txt"]["status"]
    assert rows["broken.png"]["prob_normal"] == "" and rows["broken.png"]["overlay_file"] == ""
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert len(ok) == 5
    probs = {k: np.array([float(r[f"prob_{c}"]) for c in CLASS_NAMES]) for k, r in ok.items()}
    for twin in ("a.dcm", "a_mono1", "a.nii.gz"):  # the same picture in every format: the same prediction
        np.testing.assert_allclose(probs[twin], probs["a.png"], atol=1e-4)
    for r in ok.values():
        assert r["predicted"] in CLASS_NAMES and abs(sum(float(r[f"prob_{c}"]) for c in CLASS_NAMES) - 1) < 1e-4
        assert 0 <= float(r["lung_attention"]) <= 1 and r["attention_mask"] == "predicted"
        share, ratio = float(r["lung_share"]), r["lung_attention_ratio"]
        assert 0 <= share <= 1 and (ratio == "" or float(ratio) == pytest.approx(float(r["lung_attention"]) / share))
        assert r["attention_outside_lungs"] == ("" if ratio == "" else str(float(ratio) < 1))
        assert r["saliency_class"] == r["predicted"] and Path(r["overlay_file"]).stat().st_size > 500
    # DICOM objects for the DICOM inputs only (dicom_outputs auto): tests/inference/test_dicom_outputs.py
    assert [k for k, r in ok.items() if r["seg_file"]] == ["a.dcm", "a_mono1"]
    assert all(Path(ok["a.dcm"][k]).is_file() for k in ("seg_file", "sr_file", "saliency_dicom_file"))
    mask = np.asarray(Image.open(ok["a.png"]["lung_mask_file"]))
    assert mask.shape == (60, 44) and set(np.unique(mask)) <= {0, 255}  # at the input's own size
    sal = np.load(ok["a.dcm"]["saliency_file"])
    assert sal.shape == (60, 44) and sal.dtype == np.float32 and 0 <= sal.min() and sal.max() <= 1
    nii_mask, nii_sal = nib.load(ok["a.nii.gz"]["lung_mask_file"]), nib.load(ok["a.nii.gz"]["saliency_file"])
    assert nii_mask.shape == (44, 60) and np.allclose(nii_mask.affine, np.diag([0.5, 0.5, 1, 1]))
    np.testing.assert_array_equal(np.asarray(nii_mask.dataobj).T > 0, mask > 0)  # same mask, NIfTI layout
    np.testing.assert_allclose(np.asarray(nii_sal.dataobj).T, np.load(ok["a.png"]["saliency_file"]), atol=1e-4)
    width, height = Image.open(ok["a.png"]["overlay_file"]).size
    assert width == 512 and height > 512  # the 60 x 44 source drawn at 512 x 375, caption and colour bar around it
    as_json = {Path(r["image"]).name: r for r in json.loads((out / "predictions.json").read_text())}
    assert set(as_json) == set(rows) and as_json["a.png"]["prob_covid19"] == pytest.approx(
        float(rows["a.png"]["prob_covid19"])
    )
    assert as_json["notes.txt"]["lung_attention"] is None and as_json["notes.txt"]["attention_outside_lungs"] is None
    assert isinstance(as_json["a.png"]["lung_share"], float)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["ok"], summary["failed"]) == (7, 5, 2)
    assert summary["lung_attention"]["num_images"] == summary["lung_share"]["num_images"] == 5
    flagged = summary["attention_outside_lungs"]
    assert flagged["flagged"] == sum(r["attention_outside_lungs"] == "True" for r in ok.values())
    assert sum(v["images"] for v in flagged["per_predicted_class"].values()) == flagged["images"]


def test_inference_workflow_datalist_ground_truth_mask(weights, tmp_path):
    image, mask = synthetic_cxr(40, 56, seed=1)
    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray(mask * 255).save(tmp_path / "x_mask.png")
    Image.fromarray(image).save(tmp_path / "y.png")
    (tmp_path / "list.json").write_text(json.dumps({"test": [{"image": "x.png", "mask": "x_mask.png"}, "y.png"]}))
    wf = ConfigWorkflow(
        config_file=INFERENCE,
        meta_file=str(ROOT / "configs/metadata.json"),
        logging_file=str(ROOT / "configs/logging.conf"),
        workflow_type="infer",
        bundle_root=str(ROOT),
        dataset_dir=str(tmp_path),
        datalist=str(tmp_path / "list.json"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(weights),
        image_size=int(SIZE),
        num_workers=0,
        saliency="gradcam",
        write_overlays=False,
    )
    wf.initialize()
    assert not wf.check_properties()  # every required "infer" property of the model zoo resolves
    wf.run()
    wf.finalize()  # raises SystemExit if any image failed
    rows = read_rows(tmp_path / "out" / "predictions.csv")
    assert rows["x.png"]["attention_mask"] == "ground_truth" and rows["y.png"]["attention_mask"] == "predicted"
    # the chance level of x.png is its own lung mask's share of the picture (at the model's input size)
    assert float(rows["x.png"]["lung_share"]) == pytest.approx(float(mask.mean()), abs=0.03)
    assert rows["x.png"]["overlay_file"] == "" and not (tmp_path / "out" / "overlays").exists()


def test_evaluate_reports_lung_attention_and_confidence_overlays(evaluated_tiny):
    """The shared tiny run's evaluation (``--n_overlays 2``)."""
    metrics = json.loads((evaluated_tiny.output / "metrics.json").read_text())
    att = metrics["lung_attention"]
    assert att["method"] == "gradcampp" and att["num_images"] + att["num_undefined"] == metrics["num_images"]
    assert 0 <= att["mean"] <= 1 and sum(att["histogram"]["counts"]) == att["num_images"]
    assert att["ground_truth_masks"] > 0 and set(att["per_predicted_class_mean"]) == set(CLASS_NAMES)
    overlays = sorted(p.name for p in (evaluated_tiny.output / "overlays").iterdir())
    assert len(overlays) == 4 and overlays[0].startswith("least_confident_01_") and overlays[-1].startswith("most_")
    # drawn on the 32-px synthetic sources (not the 32-px network input's copy) enlarged to 512 px
    assert all(Image.open(evaluated_tiny.output / "overlays" / name).size[0] == 512 for name in overlays)


@requires_shared
def test_real_cxr_png_and_dicom_twins_agree(weights, tmp_path):
    pngs = sorted(p for p in (SHARED_CXR / "images").glob("*.png"))[:2]
    if not pngs:
        pytest.skip(f"no PNG images under {SHARED_CXR / 'images'}")
    for p in pngs:
        pixels = np.asarray(Image.open(p).convert("L"))
        Image.fromarray(pixels).save(tmp_path / p.name)
        write_dicom(pixels, tmp_path / (p.stem + ".dcm"), monochrome1=True)
    run_bundle(
        "run",
        "--config_file",
        INFERENCE,
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(tmp_path),
        "--output_dir",
        str(tmp_path / "out"),
        "--ckpt_dir",
        str(weights),
        "--image_size",
        "64",
        "--write_overlays",
        "False",
        cwd=tmp_path,
    )
    rows = read_rows(tmp_path / "out" / "predictions.csv")
    for p in pngs:
        a, b = rows[p.name], rows[p.stem + ".dcm"]
        for c in CLASS_NAMES:
            assert float(a[f"prob_{c}"]) == pytest.approx(float(b[f"prob_{c}"]), abs=1e-4)
