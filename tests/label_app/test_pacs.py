"""The MONAI Label app on a real PACS: Orthanc with DICOMweb on 127.0.0.1 holds DX studies made from the sample;
the app finds them, answers lung masks as DICOM SEG stored back in the source study (valid per dciodvfy), stores
annotators' labels there as MANUAL SEG and trains from them.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from bundle.inference.dicom_seg import read_lung_seg, write_lung_seg
from bundle.inference.dicom_sr import read_findings_sr
from label_app.client import HTTPError, LabelServer, copy_app, free_port
from label_app.pacs import instance_file, is_running, qido, upload
from scripts.pacs import write_sample
from tests.conftest import CLASS_NAMES, ROOT
from tests.helpers import label_server_env, run_module

pytestmark = pytest.mark.slow  # Orthanc and a MONAI Label server, and a training through them

DCIODVFY = Path("/usr/bin/dciodvfy")
MASKS = ROOT / "data" / "sample" / "masks"


@pytest.fixture(scope="module")
def studies(orthanc, tmp_path_factory) -> dict[str, pydicom.Dataset]:
    """Seven DX studies from the sample (one per class, then pictures with a lung mask) in the archive, by name."""
    files = write_sample(tmp_path_factory.mktemp("dx"), count=7)
    counts = upload(orthanc.url, files)
    assert (counts["stored"], counts["studies"]) == (7, 7)
    return {f.stem: pydicom.dcmread(f) for f in files}


@pytest.fixture(scope="module")
def server(orthanc, studies, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    env = label_server_env({"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp / "cache")})  # downloads in tmp
    conf = {"bundle_root": str(ROOT)}
    with LabelServer(copy_app(tmp / "app"), orthanc.dicomweb, tmp / "server.log", conf=conf, env=env) as s:
        yield s
    assert "Traceback" not in s.log_tail(10**7), "the server logged a stack trace"


def _series(ds: pydicom.Dataset) -> str:
    return str(ds.SeriesInstanceUID)


def _seg_series(orthanc, study_uid: str) -> list[dict]:
    return qido(orthanc.dicomweb, f"/studies/{study_uid}/series", Modality="SEG")


def _dciodvfy_errors(path: Path) -> list[str]:
    check = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]


def test_datastore_lists_the_archive_radiographs(server, studies):
    assert server.get("/datastore/")["total"] == len(studies)
    objects = server.get("/datastore/", output="all")["objects"]
    assert set(objects) == {_series(ds) for ds in studies.values()}
    first = next(iter(studies.values()))
    assert objects[_series(first)]["image"]["info"]["PatientID"] == first.PatientID
    assert server.get("/info/")["datastore"]["total"] == len(studies)


def test_lung_segmentation_as_seg_is_stored_in_the_source_study(server, studies, orthanc, tmp_path):
    source = studies["kermany_train_IM-0467-0001"]
    png = np.asarray(Image.open(io.BytesIO(server.infer("lung_segmentation", _series(source), "image")[0])))
    body, content_type = server.infer("lung_segmentation", _series(source), "image", params={"dicom_seg": True})
    assert content_type == "application/dicom"
    mask, referenced = read_lung_seg(pydicom.dcmread(io.BytesIO(body)))
    assert referenced == source.SOPInstanceUID
    np.testing.assert_array_equal(mask, png)  # the SEG holds the mask the PNG answer holds
    assert 0.05 < mask.mean() < 0.8

    found = _seg_series(orthanc, source.StudyInstanceUID)
    assert len(found) == 1  # the PNG answer stored nothing
    stored = pydicom.dcmread(io.BytesIO(body))
    assert found[0]["0020000E"]["Value"] == [stored.SeriesInstanceUID]
    archived = tmp_path / "seg.dcm"
    archived.write_bytes(instance_file(orthanc.url, stored.SOPInstanceUID))
    seg = pydicom.dcmread(archived)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    np.testing.assert_array_equal(read_lung_seg(seg)[0], png)
    if DCIODVFY.exists():
        assert not _dciodvfy_errors(archived)


def test_monai_label_dicom_seg_output_answers_the_same_seg(server, studies):
    source = studies["kermany_train_IM-0467-0001"]  # not one the label test annotates: one more SEG stored
    png = np.asarray(Image.open(io.BytesIO(server.infer("lung_segmentation", _series(source), "image")[0])))
    body, content_type = server.infer("lung_segmentation", _series(source), "dicom_seg")
    assert content_type == "application/dicom"
    mask, referenced = read_lung_seg(pydicom.dcmread(io.BytesIO(body)))
    assert referenced == source.SOPInstanceUID
    np.testing.assert_array_equal(mask, png)
    with pytest.raises(HTTPError) as other:
        server.infer("classification", _series(source), "dicom_seg")
    assert other.value.status == 422 and "lung_segmentation" in other.value.body


def test_classification_as_sr_is_stored_in_the_source_study(server, studies, orthanc, tmp_path):
    source = studies["hannover_1d435a4b"]
    answer = json.loads(server.infer("classification", _series(source), "json", params={"dicom_sr": True})[0])
    made = answer["dicom_sr"]
    assert made["StudyInstanceUID"] == source.StudyInstanceUID and made["stored"]
    found = qido(orthanc.dicomweb, f"/studies/{source.StudyInstanceUID}/series", Modality="SR")
    assert [s["0020000E"]["Value"] for s in found] == [[made["SeriesInstanceUID"]]]
    archived = tmp_path / "sr.dcm"
    archived.write_bytes(instance_file(orthanc.url, made["SOPInstanceUID"]))
    numbers = read_findings_sr(pydicom.dcmread(archived))
    assert numbers["source_sop_instance_uid"] == source.SOPInstanceUID
    assert numbers["predicted"] == answer["predicted"]
    for p in answer["prediction"]:
        assert numbers[f"prob_{p['label']}"] == pytest.approx(p["score"], abs=1e-6)
    assert numbers["lung_attention"] == pytest.approx(answer["lung_attention"], abs=1e-6)
    if DCIODVFY.exists():
        assert not _dciodvfy_errors(archived)


def test_classification_runs_on_the_archive_study(server, studies):
    result = server.infer_json("classification", _series(studies["hannover_1d435a4b"]))
    assert [p["label"] for p in result["prediction"]] == CLASS_NAMES
    assert sum(p["score"] for p in result["prediction"]) == pytest.approx(1.0, abs=1e-5)
    assert result["image_size"] == [256, 256]


def test_errors_name_the_study_or_the_label(server, studies, tmp_path):
    with pytest.raises(HTTPError) as unknown:
        server.infer("lung_segmentation", "1.2.3.4")
    assert unknown.value.status == 404 and "1.2.3.4" in unknown.value.body
    bad = tmp_path / "bad.png"
    Image.fromarray(np.ones((7, 9), np.uint8)).save(bad)
    study = _series(studies["hannover_0a7faa2a"])
    with pytest.raises(HTTPError) as shape:
        server.save_label(study, bad)
    assert shape.value.status == 422 and study in shape.value.body and "(7, 9)" in shape.value.body
    with pytest.raises(HTTPError) as tag:
        server.save_label(study, MASKS / "hannover_0a7faa2a.png", tag="draft")
    assert tag.value.status == 422 and "draft" in tag.value.body


def test_saved_labels_are_manual_segs_that_training_reads(server, studies, orthanc, tmp_path):
    annotated = [name for name in studies if (MASKS / f"{name}.png").exists()]
    assert len(annotated) == 4
    for name in annotated[:3]:  # as a viewer saves a painted mask
        server.save_label(_series(studies[name]), MASKS / f"{name}.png")
    # and as a SEG file (here one written by an algorithm: what an annotator saves is stored as MANUAL)
    last = studies[annotated[3]]
    mask = (np.asarray(Image.open(MASKS / f"{annotated[3]}.png")) > 0).astype(np.uint8)
    seg_file = tmp_path / "label.dcm"
    write_lung_seg(last, mask, algorithm=("viewer", "1")).save_as(seg_file, enforce_file_format=True)
    server.save_label(_series(last), seg_file)

    for name in annotated:
        study = studies[name].StudyInstanceUID
        (found,) = _seg_series(orthanc, study)
        (instance,) = qido(orthanc.dicomweb, f"/studies/{study}/series/{found['0020000E']['Value'][0]}/instances")
        seg = pydicom.dcmread(io.BytesIO(instance_file(orthanc.url, instance["00080018"]["Value"][0])))
        assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
        expected = (np.asarray(Image.open(MASKS / f"{name}.png")) > 0).astype(np.uint8)
        np.testing.assert_array_equal(read_lung_seg(seg)[0], expected)
    assert server.get("/datastore/")["completed"] == 4  # the model's own (AUTOMATIC) SEG is not a label

    status = server.train("lung_segmentation", {"max_epochs": 2, "val_split": 0.25, "learning_rate": 1e-3})
    assert status["status"] == "DONE", server.log_tail()
    assert "left out" not in server.log_tail(10**7)
    stats = server.get("/info/")["train_stats"]["lung_segmentation"]
    assert stats["epoch"] == 2 and 0.0 < stats["eval"]["metrics"]["val_mean_dice"] <= 1.0
    assert server.infer_json("lung_segmentation", _series(last))["weights"] == "app/model/model.pt"


def test_pacs_command_line(orthanc, tmp_path):
    """``python -m scripts.pacs``: start, sample, upload (and a file that is not DICOM: one message), stop."""
    storage, port = tmp_path / "pacs", free_port()
    started = run_module("scripts.pacs", "start", "--storage", str(storage), "--port", str(port), timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}/dicom-web" in started.stdout
        pid = int((storage / "orthanc.pid").read_text())
        sample = run_module("scripts.pacs", "sample", "--out", str(tmp_path / "dx"), "--count", "2", check=True)
        assert "2 DX studies" in sample.stdout
        url = f"http://127.0.0.1:{port}"
        stored = run_module("scripts.pacs", "upload", "--url", url, str(tmp_path / "dx"), check=True)
        assert stored.stdout.startswith("2 instances stored, 0 already there, 2 studies, in ")
        refused = run_module("scripts.pacs", "upload", "--url", url, str(ROOT / "README.md"))
        assert refused.returncode == 1 and "README.md: not stored" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    finally:
        stopped = run_module("scripts.pacs", "stop", "--storage", str(storage), check=True)
    assert stopped.stdout.strip() == "stopped" and not (storage / "orthanc.pid").exists()
    assert not is_running(pid)
