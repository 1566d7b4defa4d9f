"""The DICOM source of an inference input: the image that the lung SEG, the findings SR and the saliency capture
reference.

A DICOM input is its own source. A PNG, JPEG or NIfTI input has none, so (only when asked) it gets one: a
Digital X-Ray image ("DX", Digital X-Ray Image Storage - For Presentation) made from its pixels, written beside
the other objects as ``dicom/<name>_source.dcm`` so that every reference points at an object that exists. Its
patient and study come from the user (``identity``: a datalist entry's ``patient``, or a JSON file of
``IDENTITY_KEYS`` per image) or, in the explicit "derived, no source" case, are generated; either way the image
says it is DERIVED from the file named in its Derivation Description.

``radiograph_to_dicom`` is the same conversion for upload scripts (DX or CR studies from PNGs). The common
modules (patient, study, series, equipment, SOP common) are highdicom's ``SOPClass``; the DX and CR modules are
added here, as highdicom has no class for projection radiographs. Works with highdicom 0.22 / pydicom 2 (the
MONAI Label environment) and highdicom 0.28 / pydicom 3.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from ..atomic import atomic_write

__all__ = [
    "DX_STORAGE",
    "CR_STORAGE",
    "IDENTITY_KEYS",
    "radiograph_dataset",
    "radiograph_to_dicom",
    "read_identities",
    "save_dataset",
    "source_identity",
]

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
# what a user may give about an image's patient and study (``radiograph_dataset``'s keyword arguments)
IDENTITY_KEYS = (
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_uid",
    "study_id",
    "study_date",
    "accession_number",
    "referring_physician_name",
)
MANUFACTURER = "chest_xray_ssl_multitask"
# DX requires an Imager Pixel Spacing; a converted picture's is unknown. 1 mm makes any length a viewer shows
# obviously wrong rather than plausibly wrong, and the Derivation Description says so.
PLACEHOLDER_SPACING = (1.0, 1.0)


def save_dataset(ds: Dataset, path: str | os.PathLike, what: str = "the DICOM object", kept: str | None = None) -> str:
    """Write ``ds`` as a DICOM file (preamble and file meta) atomically; returns ``path`` as a string."""
    with atomic_write(path, what=what, kept=kept) as f:
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(f, enforce_file_format=True)
        else:  # pydicom 2 (the MONAI Label environment)
            ds.save_as(f, write_like_original=False)
    return os.fspath(path)


def new_instance(series_number: int, series_description: str) -> dict[str, Any]:
    """The arguments every object the bundle derives from a radiograph gives highdicom's constructors: a new series
    (its number and description) holding one new instance, made by this bundle."""
    return {
        "series_instance_uid": hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "series_description": series_description,
    }


def _stored(pixels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(stored values, bits allocated, bits stored): uint8 as 8 bits, uint16 as 16, floats in [0, 1] as 12 bits."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"a radiograph is (rows, cols); got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        return pixels, 8, 8
    if pixels.dtype == np.uint16:
        return pixels, 16, 16
    if np.issubdtype(pixels.dtype, np.floating):
        return np.round(np.clip(pixels, 0, 1) * 4095).astype(np.uint16), 16, 12
    raise ValueError(f"pixels must be uint8, uint16 or float in [0, 1]; got {pixels.dtype}")


def _pixel_modules(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel, DX Image and VOI LUT attributes for ``pixels`` (rows, cols), MONOCHROME2, a linear window."""
    stored, allocated, bits = _stored(pixels)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape, ds.LossyImageCompression, ds.BurnedInAnnotation = "IDENTITY", "00", "NO"
    ds.WindowCenter, ds.WindowWidth = (2**bits) / 2, 2**bits
    ds.PixelData = np.ascontiguousarray(stored).astype(f"<u{allocated // 8}").tobytes()


def _chest(ds: Dataset) -> None:
    """What was imaged: the chest (SNOMED CT 51185008), an unpaired part, in the standard frontal display (the
    patient's left towards higher columns, the feet towards higher rows)."""
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "51185008", "SCT", "Chest"
    ds.AnatomicRegionSequence = DicomSequence([region])
    ds.BodyPartExamined, ds.ImageLaterality, ds.PatientOrientation = "CHEST", "U", ["L", "F"]


def _modality_modules(ds: Dataset, modality: str, spacing: tuple[float, float] | None, derived_from: str) -> None:
    """DX Series / Detector / Acquisition Context, or CR Series / Image; ImageType and derivation."""
    ds.ImageType = ["DERIVED", "SECONDARY"] if derived_from else ["ORIGINAL", "PRIMARY"]
    notes = [f"pixels of {derived_from}, no DICOM source"] if derived_from else []
    if modality == "DX":
        ds.PresentationIntentType, ds.DetectorType = "FOR PRESENTATION", ""
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
        ds.AcquisitionContextSequence = DicomSequence([])
        if spacing is None:
            notes.append("pixel spacing unknown: Imager Pixel Spacing 1 mm is a placeholder")
        ds.ImagerPixelSpacing = list(spacing or PLACEHOLDER_SPACING)
    else:
        ds.ViewPosition = ""
        if spacing is not None:
            ds.ImagerPixelSpacing = list(spacing)
    if notes:
        ds.DerivationDescription = "; ".join(notes)[:1024]


def radiograph_dataset(
    pixels: np.ndarray,
    *,
    patient_id: str,
    patient_name: str = "",
    study_uid: str | None = None,
    modality: str = "DX",
    accession_number: str = "",
    study_id: str = "1",
    study_date: str | None = None,
    patient_birth_date: str | None = None,
    patient_sex: str | None = None,
    referring_physician_name: str | None = None,
    series_description: str = "radiograph",
    pixel_spacing: tuple[float, float] | None = None,
    derived_from: str = "",
) -> Dataset:
    """A frontal chest radiograph (rows, cols) as a DX (For Presentation) or CR image in a new series.

    ``pixels``: uint8 (8 bits), uint16 (16 bits) or float in [0, 1] (12 bits), MONOCHROME2. ``study_uid`` None
    starts a new study; ``study_date`` is YYYYMMDD (default: today). ``pixel_spacing`` (row, col) in mm at the
    detector; unknown for DX means the 1 mm placeholder, said in the Derivation Description. ``derived_from``
    names the file the pixels come from (DERIVED / SECONDARY, no DICOM source); empty: an ORIGINAL image.
    """
    if modality not in ("DX", "CR"):
        raise ValueError(f"modality must be 'DX' or 'CR'; got {modality!r}")
    now = datetime.datetime.now()
    ds = hd.base.SOPClass(
        study_instance_uid=study_uid or hd.UID(),
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        sop_class_uid=DX_STORAGE if modality == "DX" else CR_STORAGE,
        instance_number=1,
        modality=modality,
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=str(patient_id),
        patient_name=patient_name or None,
        patient_birth_date=patient_birth_date,
        patient_sex=patient_sex,
        accession_number=accession_number or None,
        study_id=study_id,
        study_date=study_date or now.strftime("%Y%m%d"),
        study_time=now.strftime("%H%M%S"),
        referring_physician_name=referring_physician_name,
        series_description=series_description,
    )
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    _chest(ds)
    _modality_modules(ds, modality, pixel_spacing, derived_from)
    _pixel_modules(ds, pixels)
    return ds


def radiograph_to_dicom(pixels: np.ndarray, path: str | os.PathLike, **kwargs: Any) -> Dataset:
    """Write ``radiograph_dataset(pixels, **kwargs)`` to ``path`` (e.g. the sample PNGs as DX or CR studies for a
    PACS); returns the dataset."""
    ds = radiograph_dataset(pixels, **kwargs)
    save_dataset(ds, path, what="the DICOM radiograph")
    return ds


def read_identities(path: str | os.PathLike | None) -> dict[str, dict[str, str]]:
    """The ``dicom_identity`` JSON: ``{image: {key: value}}``, ``image`` as its path, file name or output name,
    keys from ``IDENTITY_KEYS``; ``{}`` for None.

    Raises:
        SystemExit: the file cannot be read, or names a key that is not an identity key, in one message.
    """
    if not path:
        return {}
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"dicom_identity {os.fspath(path)!r}: cannot read it ({e})") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise SystemExit(f"dicom_identity {os.fspath(path)!r}: must map each image to an object of identity keys")
    for image, values in table.items():
        unknown = sorted(set(values) - set(IDENTITY_KEYS))
        if unknown:
            raise SystemExit(
                f"dicom_identity {os.fspath(path)!r}: entry {image!r} has unknown keys {unknown}; "
                f"use {list(IDENTITY_KEYS)}"
            )
    return {k: {key: str(v) for key, v in values.items()} for k, values in table.items()}


def source_identity(
    image: str, name: str, identities: dict[str, dict[str, str]], patient: str | None = None
) -> dict[str, str]:
    """The patient and study of a converted input: its ``identities`` entry (by path, file name or output name),
    else its datalist ``patient`` as Patient ID, else a generated Patient ID (the "derived, no source" case)."""
    for key in (image, os.path.basename(image), name):
        if key in identities:
            found = dict(identities[key])
            found.setdefault("patient_id", patient or f"DERIVED-{hd.UID()[-12:]}")
            return found
    return {"patient_id": patient or f"DERIVED-{hd.UID()[-12:]}"}
