"""bundle.inference.dicom_capture: the overlay picture as a valid Secondary Capture in the source's study."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from bundle.inference.dicom_capture import read_capture_pixels, write_saliency_capture
from bundle.inference.dicom_source import radiograph_to_dicom, save_dataset
from tests.conftest import synthetic_cxr
from tests.inference.conftest import dciodvfy


def test_capture_keeps_the_picture_in_the_source_study(tmp_path):
    source = radiograph_to_dicom(synthetic_cxr(32, 32)[0], tmp_path / "src.dcm", patient_id="P4")
    picture = np.random.default_rng(0).integers(0, 256, (70, 52, 3), dtype=np.uint8)
    path = save_dataset(write_saliency_capture(source, picture), tmp_path / "sc.dcm")
    warnings = dciodvfy(path)
    assert all("Laterality" in w for w in warnings)  # empty, as the chest is not a paired part
    back = pydicom.dcmread(path)
    np.testing.assert_array_equal(read_capture_pixels(back), picture)
    assert back.PhotometricInterpretation == "RGB" and back.Modality == "OT"
    assert (back.PatientID, back.StudyInstanceUID) == ("P4", source.StudyInstanceUID)
    assert back.SOPInstanceUID != source.SOPInstanceUID and back.SeriesInstanceUID != source.SeriesInstanceUID
    with pytest.raises(ValueError, match=r"must be \(rows, cols, 3\) uint8 RGB"):
        write_saliency_capture(source, picture[..., 0])
