"""bundle.inference.dicom_sr: the findings SR is a valid TID 1500 report of the source whose numbers read back
exactly, with SNOMED CT codes where they exist and the private scheme declared."""

from __future__ import annotations

import pydicom
import pytest

from bundle.inference.dicom_source import radiograph_to_dicom, save_dataset
from bundle.inference.dicom_sr import SCHEME, read_findings_sr, write_findings_sr
from tests.conftest import synthetic_cxr
from tests.inference.conftest import dciodvfy

CLASSES = ["normal", "bacterial_pneumonia", "viral_pneumonia", "covid19", "a_class_without_a_code"]
ROW = {
    "predicted": "covid19",
    "prob_normal": 0.012345678901234567,
    "prob_bacterial_pneumonia": 0.1,
    "prob_viral_pneumonia": 0.2,
    "prob_covid19": 0.6876543210987654,
    "prob_a_class_without_a_code": 1e-9,
    "lung_attention": 0.4321,
    "lung_share": 0.31,
    "lung_attention_ratio": 0.4321 / 0.31,
}


@pytest.fixture
def source(tmp_path) -> pydicom.Dataset:
    return radiograph_to_dicom(synthetic_cxr(32, 32)[0], tmp_path / "src.dcm", patient_id="P3", accession_number="A9")


def test_sr_numbers_read_back_exactly(source, tmp_path):
    path = save_dataset(write_findings_sr(source, ROW, CLASSES, algorithm=("CXR model", "0.11.0")), tmp_path / "sr.dcm")
    warnings = dciodvfy(path)
    assert all(SCHEME in w for w in warnings)  # only "unrecognized" private coding scheme designators
    back = pydicom.dcmread(path)
    found = read_findings_sr(back)
    assert found.pop("source_sop_instance_uid") == source.SOPInstanceUID
    assert found == ROW  # the same floats, not rounded decimal strings
    assert (back.PatientID, back.StudyInstanceUID, back.AccessionNumber) == ("P3", source.StudyInstanceUID, "A9")
    assert back.SOPInstanceUID != source.SOPInstanceUID and back.SeriesInstanceUID != source.SeriesInstanceUID
    assert back.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == SCHEME
    text = str(back)
    assert "840539006" in text and "399208008" in text and "CXR model" in text  # COVID-19, plain chest X-ray


def test_multi_label_and_undefined_quantities(source):
    row = {
        **ROW,
        "predicted": "a_class_without_a_code;normal",
        "lung_attention_ratio": None,
        "lung_share": float("nan"),
    }
    found = read_findings_sr(write_findings_sr(source, row, CLASSES, algorithm=("m", "1")))
    assert found["predicted"] == "a_class_without_a_code;normal"
    assert "lung_attention_ratio" not in found and "lung_share" not in found and found["lung_attention"] == 0.4321
    nothing = read_findings_sr(write_findings_sr(source, {**row, "predicted": ""}, CLASSES, algorithm=("m", "1")))
    assert nothing["predicted"] == ""
