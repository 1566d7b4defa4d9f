"""bundle.inference.dicom_source: DX and CR radiographs that dciodvfy accepts, read back by the bundle's reader;
the identity of a converted input."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from bundle.data.readers import read_cxr
from bundle.inference.dicom_source import CR_STORAGE, DX_STORAGE, radiograph_to_dicom, read_identities, source_identity
from tests.conftest import synthetic_cxr
from tests.inference.conftest import dciodvfy


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_radiograph_to_dicom_is_valid_and_reads_back(modality, tmp_path):
    image, _ = synthetic_cxr(60, 44, seed=1)
    path = tmp_path / "a.dcm"
    ds = radiograph_to_dicom(
        image, path, patient_id="P7", patient_name="Doe^Jane", accession_number="ACC1", modality=modality
    )
    assert dciodvfy(path) == []  # no warning either
    back = pydicom.dcmread(path)
    assert back.SOPClassUID == (DX_STORAGE if modality == "DX" else CR_STORAGE) and back.Modality == modality
    assert (back.PatientID, str(back.PatientName), back.AccessionNumber) == ("P7", "Doe^Jane", "ACC1")
    assert back.SOPInstanceUID == ds.SOPInstanceUID and list(back.ImageType) == ["ORIGINAL", "PRIMARY"]
    np.testing.assert_array_equal(back.pixel_array, image)
    # the bundle's reader sees the picture a PNG of it gives (min-max scaled)
    np.testing.assert_allclose(read_cxr(path), (image - image.min()) / float(image.max() - image.min()), atol=1e-6)


def test_derived_source_says_so(tmp_path):
    image, _ = synthetic_cxr(40, 56, seed=2)
    study = pydicom.uid.generate_uid()
    path = tmp_path / "d.dcm"
    radiograph_to_dicom(image / 255.0, path, patient_id="P1", study_uid=study, derived_from="x.png")
    assert dciodvfy(path) == []
    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == study and list(back.ImageType) == ["DERIVED", "SECONDARY"]
    assert "x.png, no DICOM source" in back.DerivationDescription and "placeholder" in back.DerivationDescription
    assert back.BitsStored == 12 and back.pixel_array.max() == round(image.max() / 255 * 4095)
    with pytest.raises(ValueError, match="modality must be"):
        radiograph_to_dicom(image, tmp_path / "e.dcm", patient_id="P1", modality="CT")


def test_identities_from_json_datalist_or_generated(tmp_path):
    table = tmp_path / "ids.json"
    table.write_text(json.dumps({"a.png": {"patient_id": "P1", "study_uid": "1.2.3"}, "b": {"patient_name": "X^Y"}}))
    ids = read_identities(table)
    assert source_identity("/data/a.png", "a", ids) == {"patient_id": "P1", "study_uid": "1.2.3"}
    assert source_identity("/data/b.png", "b", ids, patient="kermany:7") == {
        "patient_name": "X^Y",
        "patient_id": "kermany:7",
    }
    assert source_identity("/data/c.png", "c", ids, patient="p3") == {"patient_id": "p3"}
    generated = source_identity("/data/c.png", "c", ids)["patient_id"]
    assert generated.startswith("DERIVED-") and generated != source_identity("/data/c.png", "c", ids)["patient_id"]
    table.write_text(json.dumps({"a.png": {"patient": "P1"}}))
    with pytest.raises(SystemExit, match=r"ids.json.*entry 'a.png' has unknown keys \['patient'\]; use"):
        read_identities(table)
    table.write_text("{")
    with pytest.raises(SystemExit, match="cannot read it"):
        read_identities(table)
