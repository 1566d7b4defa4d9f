"""Readers: every format gives the same (rows, cols) [0, 1] array for the same picture."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bundle.data.readers import CXRReadError, read_cxr, read_mask
from tests.conftest import synthetic_cxr

H, W = 30, 50  # non-square, so a transposed reader cannot pass


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 16, **tags) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture
def picture() -> np.ndarray:
    return synthetic_cxr(H, W, seed=3)[0]


def expected(picture: np.ndarray) -> np.ndarray:
    p = picture.astype(np.float32)
    return (p - p.min()) / (p.max() - p.min())


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_png_modes_agree(tmp_path, picture, mode):
    if mode == "I;16":
        img = Image.fromarray(picture.astype(np.uint16) * 257)
    else:
        img = Image.fromarray(picture).convert(mode)
    img.save(tmp_path / "x.png")
    out = read_cxr(tmp_path / "x.png")
    assert out.shape == (H, W) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected(picture), atol=2e-3)


def test_jpeg_close_to_png(tmp_path, picture):
    Image.fromarray(picture).save(tmp_path / "x.jpg", quality=95)
    out = read_cxr(tmp_path / "x.jpg")
    assert out.shape == (H, W)
    assert np.abs(out - expected(picture)).mean() < 0.02


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("bits", [12, 16])
def test_dicom_matches_png(tmp_path, picture, photometric, bits):
    Image.fromarray(picture).save(tmp_path / "x.png")
    scale = (2**bits - 1) / 255
    stored = picture.astype(np.float64) * scale
    if photometric == "MONOCHROME1":  # stored inverted: high = dark
        stored = (2**bits - 1) - stored
    write_dicom(tmp_path / "x.dcm", np.round(stored), photometric, bits)
    png, dcm = read_cxr(tmp_path / "x.png"), read_cxr(tmp_path / "x.dcm")
    assert dcm.shape == png.shape == (H, W)
    np.testing.assert_allclose(dcm, png, atol=1e-3)


def test_dicom_without_suffix_and_rescale(tmp_path, picture):
    write_dicom(tmp_path / "IM0001", picture.astype(np.uint16), RescaleSlope=2, RescaleIntercept=-100)
    np.testing.assert_allclose(read_cxr(tmp_path / "IM0001"), expected(picture), atol=1e-5)


def test_dicom_window_is_applied(tmp_path, picture):
    # a narrow window clips: values outside [c - w/2, c + w/2] saturate
    write_dicom(tmp_path / "w.dcm", picture.astype(np.uint16) * 16, bits=12, WindowCenter=1600, WindowWidth=800)
    out = read_cxr(tmp_path / "w.dcm")
    raw = picture.astype(np.float64) * 16
    assert out[raw <= 1200].max() == pytest.approx(0, abs=1e-6)
    assert out[raw >= 2000].min() == pytest.approx(1, abs=1e-6)


def test_dicom_with_pydicom_2_helpers(tmp_path, picture, monkeypatch):
    # pydicom 2 (the MONAI Label environment) has no pydicom.pixels; its helpers live in pixel_data_handlers.util,
    # which pydicom 3 still carries: the reader gives the same array with either. (tests/label_app reads DICOM
    # studies with pydicom 2 itself.)
    from pydicom.pixel_data_handlers import util

    from bundle.data import readers

    write_dicom(
        tmp_path / "m1.dcm", picture.astype(np.uint16) * 16, "MONOCHROME1", 12, WindowCenter=1600, WindowWidth=800
    )
    assert readers._pixel_ops() is pydicom.pixels
    with_pixels = read_cxr(tmp_path / "m1.dcm")
    monkeypatch.setattr(readers, "_pixel_ops", lambda: util)
    np.testing.assert_array_equal(read_cxr(tmp_path / "m1.dcm"), with_pixels)


def test_nifti_matches_png(tmp_path, picture):
    Image.fromarray(picture).save(tmp_path / "x.png")
    # NIfTI holds (x, y) = (column, row), the way MONAI writes 2D pictures
    nib.save(nib.Nifti1Image(picture.T.astype(np.float32)[..., None], np.eye(4)), str(tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(read_cxr(tmp_path / "x.nii.gz"), read_cxr(tmp_path / "x.png"), atol=1e-6)


def test_mask_is_binary(tmp_path):
    mask = synthetic_cxr(H, W)[1] * 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert set(np.unique(out)) == {0, 1} and out.shape == (H, W)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("missing.png", None, "file not found"),
        ("broken.png", b"\x89PNG\r\n\x1a\n not really", "cannot decode"),
        ("notes.txt", b"hello", "unsupported file type"),
        ("broken.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00", "no pixel data"),
    ],
)
def test_errors_name_file_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CXRReadError) as err:
        read_cxr(path)
    assert name in str(err.value) and reason in str(err.value)


def test_volume_nifti_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4)), str(tmp_path / "v.nii"))
    with pytest.raises(CXRReadError, match="2D"):
        read_cxr(tmp_path / "v.nii")


def test_pydicom_roundtrip_tags(tmp_path, picture):
    write_dicom(tmp_path / "t.dcm", picture.astype(np.uint16), "MONOCHROME1", 8)
    ds = pydicom.dcmread(tmp_path / "t.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
