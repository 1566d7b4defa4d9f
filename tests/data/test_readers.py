"""Readers: every format gives the same (rows, cols) [0, 1] array for the same picture; bombs are refused."""

from __future__ import annotations

import csv
import gzip
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

from bundle.data import readers
from bundle.data.readers import CXRReadError, read_array, read_cxr, read_mask, read_raw
from bundle.data.transforms import LoadCXRd
from tests.conftest import BACKBONE, CLASS_NAMES, ROOT, synthetic_cxr
from tests.helpers import bundle_in_process, launch

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


# --- decompression bombs: tiny files declaring huge images are refused from their headers ------------------------


def png_bytes(width: int, height: int, rows: int = 4) -> bytes:
    """A valid 8-bit grey PNG header declaring ``width`` x ``height`` with the zlib-compressed zeros of a few rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 marker is patched to declare ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encapsulate(fragment: bytes) -> bytes:
    """Encapsulated pixel data of one frame in one fragment, after an empty basic offset table."""
    item = b"\xfe\xff\x00\xe0"
    fragment += b"\0" * (len(fragment) % 2)
    return item + b"\0\0\0\0" + item + struct.pack("<I", len(fragment)) + fragment


def write_dicom_header(
    path: Path, rows: int, cols: int, pixel_data: bytes, syntax: str = ExplicitVRLittleEndian, **tags
) -> None:
    """A MONOCHROME2 DICOM (16-bit; 8-bit for compressed syntaxes) whose Rows/Columns need not match ``pixel_data``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if syntax != ExplicitVRLittleEndian:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixel_data
    if syntax != ExplicitVRLittleEndian:
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)


def nifti_header(shape: tuple[int, ...], version: int = 1, gz: bool = False) -> bytes:
    """A NIfTI-1 or -2 header (and no voxels) declaring a float32 image of ``shape``."""
    hdr = nib.Nifti1Header() if version == 1 else nib.Nifti2Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(shape)  # NIfTI-1 dimensions are int16, NIfTI-2 ones int64
    hdr["vox_offset"] = hdr.single_vox_offset
    data = hdr.binaryblock + b"\0" * 4
    return gzip.compress(data) if gz else data


def write_bombs(folder: Path) -> dict[str, str]:
    """Every kind of bomb the readers refuse: name -> path. Each file is at most a few kilobytes."""
    files = {
        "bomb.png": png_bytes(30000, 30000),  # 900 MP: PIL's own DecompressionBombError (from 179 MP)
        "warn.png": png_bytes(10000, 9000),  # 90 MP: PIL only warns (from 89.5 MP)
        "edge.png": png_bytes(8100, 8000),  # 64.8 MP: PIL is silent, MAX_PIXELS is not
        "bomb.nii": nifti_header((30000, 30000, 1)),
        "bomb.nii.gz": nifti_header((50000, 50000), version=2, gz=True),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    write_dicom_header(folder / "native.dcm", 60000, 60000, b"\0" * 16)
    write_dicom_header(folder / "frames.dcm", 4000, 4000, b"\0" * 16, NumberOfFrames=10)
    write_dicom_header(folder / "rle.dcm", 40000, 40000, encapsulate(b"\0" * 64), RLELossless)
    write_dicom_header(folder / "jpeg.dcm", 64, 64, encapsulate(jpeg_declaring(9000, 8000)), JPEGBaseline8Bit)
    names = list(files) + ["native.dcm", "frames.dcm", "rle.dcm", "jpeg.dcm"]
    assert all((folder / n).stat().st_size < 4096 for n in names)
    return {n: str(folder / n) for n in names}


REFUSED = " than the 64 MP a radiograph can have; refused before decoding"

# Runs in a fresh interpreter, so that its peak RSS (ru_maxrss) after the warm-up reads is the bombs' own.
BOMB_SCRIPT = """
import json, resource, sys, time, warnings
from PIL import Image
from bundle.data.readers import CXRReadError, read_raw
for path in sys.argv[2:]:  # warm-up: every reader imports its libraries and decodes a small image once
    read_raw(path)
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)  # it must not escape the readers
before, results = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, {}
for path in json.loads(sys.argv[1]):
    start = time.perf_counter()
    try:
        read_raw(path)
        message = "decoded"
    except CXRReadError as e:
        message = str(e)
    results[path] = (message, time.perf_counter() - start)
growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"results": results, "growth_mb": growth_kb / 1024}))
"""


def test_bombs_refused_before_decoding(tmp_path, picture):
    bombs = write_bombs(tmp_path)
    Image.fromarray(picture).save(tmp_path / "ok.png")
    write_dicom(tmp_path / "ok.dcm", picture)
    nib.save(nib.Nifti1Image(picture.T.astype(np.float32), np.eye(4)), str(tmp_path / "ok.nii.gz"))
    warm = [str(tmp_path / n) for n in ("ok.png", "ok.dcm", "ok.nii.gz")]
    # a fresh process: its peak memory shows what decoding the bombs would have cost
    proc = launch([sys.executable, "-c", BOMB_SCRIPT, json.dumps(list(bombs.values())), *warm], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    for name, path in bombs.items():
        message, seconds = report["results"][path]
        assert message.startswith(f"{path}: declares "), message
        assert message.endswith(REFUSED), message
        assert seconds < 2, (name, seconds)
    results = {name: report["results"][path][0] for name, path in bombs.items()}
    assert results["warn.png"].endswith(": declares 10000 x 9000 pixels (90 MP), more" + REFUSED)
    assert "declares 8100 x 8000 pixels (64.8 MP)" in results["edge.png"]
    assert "declares an image of 900 MP" in results["bomb.png"]  # PIL counts the pixels and refuses at 179 MP
    assert "declares 30000 x 30000 pixels (900 MP)" in results["bomb.nii"]
    assert "declares 50000 x 50000 pixels (2.5 GP)" in results["bomb.nii.gz"]
    assert "declares 60000 x 60000 pixels (3.6 GP)" in results["native.dcm"]
    assert "declares 4000 x 4000 pixels in 10 frames (160 MP)" in results["frames.dcm"]
    assert "declares 40000 x 40000 pixels (1.6 GP)" in results["rle.dcm"]
    assert "declares 9000 x 8000 pixels (72 MP)" in results["jpeg.dcm"]  # the JPEG's own header, not Rows/Columns
    assert "DecompressionBombWarning" not in proc.stderr
    # decoding any one of them would take hundreds of megabytes or more
    assert report["growth_mb"] < 48, report["growth_mb"]


def test_size_limit_leaves_real_radiographs(tmp_path):
    # the largest detector's image (43 x 43 cm at 100 um) is read, not refused
    Image.fromarray(np.zeros((4300, 4300), np.uint8)).save(tmp_path / "big.png")
    assert read_raw(tmp_path / "big.png").shape == (4300, 4300)
    assert readers.MAX_PIXELS > 3 * 4300 * 4300  # room to spare


def test_lowered_pil_limit_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses from twice this
    (tmp_path / "x.png").write_bytes(png_bytes(100, 50))
    with pytest.raises(CXRReadError, match=r"x.png: declares an image of 0.005 MP, more than PIL.Image.MAX_IMAGE_PIX"):
        read_raw(tmp_path / "x.png")


def test_short_dicom_pixel_data_refused(tmp_path, picture):
    write_dicom(tmp_path / "short.dcm", picture)
    data = (tmp_path / "short.dcm").read_bytes()
    (tmp_path / "short.dcm").write_bytes(data[:-100])
    reason = r"short.dcm: cannot decode dicom image \(pixel data holds 2900 bytes, fewer than the 3000 its header"
    with pytest.raises(CXRReadError, match=reason):
        read_raw(tmp_path / "short.dcm")


@pytest.mark.parametrize(
    "tags, reason",
    [
        (dict(Rows=0), r"cannot decode dicom image \(Columns x Rows is 50 x 0\)"),
        (dict(SamplesPerPixel=7), "SamplesPerPixel is 7"),
        (dict(BitsAllocated=12), "BitsAllocated is 12"),
        (dict(NumberOfFrames="-2"), "NumberOfFrames is -2"),
        (dict(NumberOfFrames="2.5"), "NumberOfFrames is '2.5', not a whole number"),
        (dict(NumberOfFrames="2"), "expected a single 2D frame, got 2 frames"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, writing and reading "2.5" as an integer
def test_absurd_dicom_geometry_refused(tmp_path, picture, tags, reason):
    write_dicom(tmp_path / "odd.dcm", picture, **tags)
    with pytest.raises(CXRReadError, match=reason):
        read_raw(tmp_path / "odd.dcm")


def test_renamed_file_of_another_format_refused(tmp_path, picture):
    Image.fromarray(picture).save(tmp_path / "x.png", format="GIF")  # PIL would decode it; a radiograph is no GIF
    with pytest.raises(CXRReadError, match="x.png: cannot decode pil image"):
        read_raw(tmp_path / "x.png")
    Image.fromarray(picture).save(tmp_path / "y.png", format="JPEG")  # exported collections do this
    assert read_raw(tmp_path / "y.png").shape == (H, W)


def test_inference_reports_bomb_and_truncated_file(tmp_path, picture):
    from bundle.atomic import atomic_save
    from bundle.networks import MultiTaskNet

    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_cxr(48, 40, seed=i)[0]).save(data / f"good{i}.png")
    (data / "bomb.png").write_bytes(png_bytes(30000, 30000))
    write_dicom(data / "cut.dcm", picture)
    (data / "cut.dcm").write_bytes((data / "cut.dcm").read_bytes()[:-1000])
    torch.manual_seed(0)
    atomic_save(MultiTaskNet(len(CLASS_NAMES), BACKBONE).state_dict(), tmp_path / "model.pt")
    proc = bundle_in_process(  # the run ends in an error, and its work is 4 small images: no process of its own
        "run",
        "--config_file",
        str(ROOT / "configs" / "inference.json"),
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(tmp_path),
        "--image_size",
        "64",
        "--num_workers",
        "0",
        cwd=tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in text and "2 of 4 images failed" in text
    bomb = f"{data / 'bomb.png'}: declares an image of 900 MP, more" + REFUSED
    assert bomb in text and f"{data / 'cut.dcm'}: cannot decode dicom image (pixel data holds 2000 bytes" in text
    with open(out / "predictions.csv") as f:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(f)}
    assert set(rows) == {"good0.png", "good1.png", "bomb.png", "cut.dcm"}
    for name in ("good0.png", "good1.png"):
        assert rows[name]["status"] == "ok" and rows[name]["predicted"] in CLASS_NAMES
    assert "refused before decoding" in rows["bomb.png"]["status"] and rows["bomb.png"]["predicted"] == ""
    assert "fewer than the 3000" in rows["cut.dcm"]["status"] and rows["cut.dcm"]["predicted"] == ""


def test_scaling_survives_extreme_values(tmp_path, picture):
    # a rescale slope near the float32 limit: the values are finite, their range is not
    write_dicom(tmp_path / "x.dcm", picture, RescaleSlope="4e36", RescaleIntercept="-5.82e38")  # -3.1e38 to 3.1e38
    out = read_cxr(tmp_path / "x.dcm")
    assert np.isfinite(out).all() and out.min() == 0 and out.max() == 1


def test_a_picture_in_memory_is_read_as_its_file(tmp_path, picture):
    """``read_array`` and ``LoadCXRd`` on an array give a file's pixels exactly, and name the array in refusals."""
    Image.fromarray(picture).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_array(picture), read_cxr(tmp_path / "x.png"))
    np.testing.assert_array_equal(read_array(picture.astype(np.uint16) * 16), read_cxr(tmp_path / "x.png"))
    load = LoadCXRd(on_error="status")
    from_file, from_array = load({"image": str(tmp_path / "x.png")}), load({"image": picture, "name": "mine"})
    assert from_array["status"] == "ok" and from_array["image_path"] == from_array["name"] == "mine"
    assert set(from_array) == set(from_file) and from_array["orig_shape"].tolist() == [H, W]
    assert torch.equal(from_array["image"], from_file["image"]) and float(from_array["has_mask"]) == 0
    for bad, reason in ((np.zeros((1, 5)), "not a 2D image"), (np.full((4, 4), np.inf), "non-finite"),
                        (np.array([["a", "b"], ["c", "d"]]), "not an array of numbers")):  # fmt: skip
        assert reason in load({"image": bad, "name": "bad"})["status"]
        with pytest.raises(CXRReadError, match=f"^bad: .*{reason}"):
            read_array(bad, "bad")
    tensor = torch.zeros(1, 4, 4)  # loaded upstream: passed on unchanged
    assert load({"image": tensor})["image"] is tensor
