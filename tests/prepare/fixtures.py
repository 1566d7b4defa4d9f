"""Small stand-ins for the public datasets' files: images, DICOMs, broken files, and datalist checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bundle.data.datalist import SECTIONS, check_entries, load_datalist
from bundle.prepare.cli import main

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
_seed = [0]


def pixels(shape=(24, 20), bits: int = 8) -> np.ndarray:
    """A distinct random picture on every call, so that fixtures have no accidental duplicates."""
    _seed[0] += 1
    rng = np.random.default_rng(_seed[0])
    return rng.integers(0, 2**bits, size=shape).astype(np.uint8 if bits == 8 else np.uint16)


def write_image(path: str | Path, shape=(24, 20), rgb: bool = False) -> Path:
    """A PNG or JPEG (by suffix) grayscale (or RGB, like Kermany's 3-channel JPEGs) picture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = pixels(shape)
    img = Image.fromarray(arr).convert("RGB") if rgb else Image.fromarray(arr)
    img.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def write_mask(path: str | Path, shape=(24, 20), value: int = 255) -> Path:
    """A lung mask PNG: two rectangles of ``value`` (255 as in the COVID-19 Radiography Database)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros(shape, np.uint8)
    arr[4:-4, 2 : shape[1] // 2 - 1] = value
    arr[4:-4, shape[1] // 2 + 1 : -2] = value
    Image.fromarray(arr).save(path)
    return path


def write_dicom(
    path: str | Path,
    patient_id: str = "P1",
    view: str | None = "PA",
    modality: str = "DX",
    shape=(32, 28),
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    accession: str | None = None,
    photometric: str = "MONOCHROME2",
) -> Path:
    """A 12-bit radiograph as real DICOM (explicit VR little endian, with the tags the layouts read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = pixels(shape, bits=12)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = f"Anon^{patient_id}"
    ds.Modality = modality
    if view is not None:
        ds.ViewPosition = view
    if accession is not None:
        ds.AccessionNumber = accession
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_truncated(path: str | Path, like: str | Path) -> Path:
    """A copy of ``like`` cut in half: the header reads, the pixels do not (an interrupted download)."""
    data = Path(like).read_bytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


def write_garbage(path: str | Path) -> Path:
    """A file with an image suffix that holds no image."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"this is not an image\n" * 4)
    return Path(path)


def run(layout: str, src: Path, out: Path, *extra: str) -> tuple[dict, dict]:
    """Prepare in this process (one worker) and return (datalist, summary)."""
    assert main([layout, "--src", str(src), "--out", str(out), "--workers", "1", *extra]) == 0
    return json.loads((out / "datalist.json").read_text()), json.loads((out / "summary.json").read_text())


def check_datalist(out: Path, datalist: dict) -> dict[str, list[dict]]:
    """The checks every prepared datalist must pass; returns its sections with absolute paths."""
    sections = load_datalist(out / "datalist.json", out)
    everything = [e for s in SECTIONS for e in sections[s]]
    assert not check_entries(everything, len(datalist["class_names"]), datalist["multi_label"])
    assert datalist["labels"] == {str(i): c for i, c in enumerate(datalist["class_names"])}
    patients = {s: {e.get("patient") or e["image"] for e in sections[s]} for s in SECTIONS}
    for i, a in enumerate(SECTIONS):
        for b in SECTIONS[i + 1 :]:
            assert not patients[a] & patients[b], f"patients in both {a} and {b}: {patients[a] & patients[b]}"
    images = [e["image"] for e in everything]
    assert len(images) == len(set(images))
    return sections


def skipped_items(summary: dict) -> dict[str, dict]:
    """Skipped items by their base name (a file) or by their ``<file> line <n>`` name (a CSV row)."""
    return {os.path.basename(s["item"]) if os.sep in s["item"] else s["item"]: s for s in summary["skipped"]}
