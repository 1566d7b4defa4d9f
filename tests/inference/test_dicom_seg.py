"""bundle.inference.dicom_seg: the lung SEG is valid, reads back pixel for pixel, sits in the source's study and
references it; the same functions work in the MONAI Label environment (highdicom 0.22, pydicom 2)."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pydicom
import pytest

from bundle.inference.dicom_seg import read_lung_seg, write_lung_seg
from bundle.inference.dicom_source import radiograph_to_dicom, save_dataset
from label_app.client import LABEL_PYTHON
from tests.conftest import ROOT, synthetic_cxr
from tests.inference.conftest import dciodvfy


@pytest.fixture
def source(tmp_path) -> pydicom.Dataset:
    image, _ = synthetic_cxr(60, 44, seed=5)
    return radiograph_to_dicom(image, tmp_path / "src.dcm", patient_id="P9", patient_name="Doe^J")


@pytest.mark.parametrize("algorithm", [("CXR model", "0.11.0"), None])
def test_seg_reads_back_in_the_source_study(source, algorithm, tmp_path):
    _, mask = synthetic_cxr(60, 44, seed=5)
    seg = write_lung_seg(source, mask, algorithm=algorithm)
    path = save_dataset(seg, tmp_path / "seg.dcm")
    assert dciodvfy(path) == []
    back = pydicom.dcmread(path)
    pixels, referenced = read_lung_seg(back)
    np.testing.assert_array_equal(pixels, mask)
    assert pixels.dtype == np.uint8 and referenced == source.SOPInstanceUID
    assert (back.PatientID, back.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
    assert back.SOPInstanceUID != source.SOPInstanceUID and back.SeriesInstanceUID != source.SeriesInstanceUID
    segment = back.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert segment.SegmentAlgorithmType == ("AUTOMATIC" if algorithm else "MANUAL")
    if algorithm:
        assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "CXR model"
    assert write_lung_seg(source, mask, algorithm=algorithm).SOPInstanceUID != back.SOPInstanceUID  # new each time


def test_mask_of_another_shape_is_refused(source):
    with pytest.raises(ValueError, match=r"lung mask shape \(44, 60\) differs from the source image's .* \(60, 44\)"):
        write_lung_seg(source, np.zeros((44, 60), np.uint8), algorithm=None)
    empty, _ = read_lung_seg(write_lung_seg(source, np.zeros((60, 44), bool), algorithm=None))
    assert empty.shape == (60, 44) and not empty.any()  # an empty mask is one all-zero frame


LABEL_SCRIPT = """
import json, sys
import numpy as np, pydicom, highdicom
from bundle.inference.dicom_seg import read_lung_seg, write_lung_seg
from bundle.inference.dicom_source import radiograph_to_dicom, save_dataset
from bundle.inference.dicom_sr import read_findings_sr, write_findings_sr
from bundle.inference.dicom_capture import read_capture_pixels, write_saliency_capture
out = sys.argv[1]
mask = np.zeros((30, 20), np.uint8); mask[5:25, 3:9] = 1
src = radiograph_to_dicom((mask * 100 + 50).astype(np.uint8), out + "/src.dcm", patient_id="P2", modality="CR")
seg = write_lung_seg(src, mask, algorithm=("m", "1"))
save_dataset(seg, out + "/seg.dcm")
back, uid = read_lung_seg(pydicom.dcmread(out + "/seg.dcm"))
row = {"predicted": "covid19", "prob_normal": 0.25, "prob_covid19": 0.75, "lung_attention": 0.5, "lung_share": 0.2}
save_dataset(write_findings_sr(src, row, ["normal", "covid19"], algorithm=("m", "1")), out + "/sr.dcm")
picture = np.full((8, 6, 3), 200, np.uint8)
save_dataset(write_saliency_capture(src, picture), out + "/sc.dcm")
print(json.dumps({"pydicom": pydicom.__version__, "highdicom": highdicom.__version__, "equal": bool((back == mask).all()),
                  "uid": uid == src.SOPInstanceUID, "sr": read_findings_sr(pydicom.dcmread(out + "/sr.dcm")),
                  "sc": bool((read_capture_pixels(pydicom.dcmread(out + "/sc.dcm")) == picture).all())}))
"""


@pytest.mark.skipif(not LABEL_PYTHON.exists(), reason=f"the MONAI Label environment {LABEL_PYTHON} is absent")
def test_the_monai_label_environment_writes_and_reads_the_same_objects(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(LABEL_PYTHON), "-c", LABEL_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pydicom"].startswith("2.") and result["highdicom"] == "0.22.0"
    assert result["equal"] and result["uid"] and result["sc"]
    assert {k: result["sr"][k] for k in ("predicted", "prob_normal", "prob_covid19", "lung_attention")} == {
        "predicted": "covid19",
        "prob_normal": 0.25,
        "prob_covid19": 0.75,
        "lung_attention": 0.5,
    }
    for name in ("src", "seg", "sr", "sc"):  # written by pydicom 2, valid and read by pydicom 3
        dciodvfy(tmp_path / f"{name}.dcm")
    mask, _ = read_lung_seg(pydicom.dcmread(tmp_path / "seg.dcm"))
    assert mask.sum() == 20 * 6
