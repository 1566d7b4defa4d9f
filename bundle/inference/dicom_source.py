"""A radiograph as a DICOM DX or CR image (highdicom's SOP class modules): what an archive holds for a study."""

from __future__ import annotations

import datetime
import os

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["radiograph_to_dicom"]

SOP_CLASSES = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}  # DX for presentation, CR


def _save(ds: pydicom.Dataset, path: str | os.PathLike) -> None:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2 (the MONAI Label environment)
        ds.save_as(str(path), write_like_original=False)


def radiograph_to_dicom(
    pixels: np.ndarray,
    path: str | os.PathLike,
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str | None = None,
    modality: str = "DX",
) -> pydicom.Dataset:
    """Write ``pixels`` (rows, cols) uint8 or uint16, MONOCHROME2, as a frontal chest ``modality`` image to
    ``path``; returns the dataset written. A new study unless ``study_uid`` is given."""
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality {modality!r}: one of {sorted(SOP_CLASSES)}")
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels: a (rows, cols) uint8 or uint16 array, not {pixels.dtype} {pixels.shape}")
    now = datetime.datetime.now()
    ds = hd.SOPClass(
        study_instance_uid=study_uid or generate_uid(),
        series_instance_uid=generate_uid(),
        series_number=1,
        sop_instance_uid=generate_uid(),
        sop_class_uid=SOP_CLASSES[modality],
        instance_number=1,
        modality=modality,
        manufacturer="chest_xray_ssl_multitask",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=patient_id,
        patient_name=patient_name,
        study_date=now.date(),
        study_time=now.time(),
        accession_number="",
        study_id="1",
        referring_physician_name="",
    )
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ["L", "F"]
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape, ds.LossyImageCompression, ds.BurnedInAnnotation = "IDENTITY", "00", "NO"
    if modality == "DX":
        ds.PresentationIntentType, ds.ImageLaterality = "FOR PRESENTATION", "U"
    lo, hi = int(pixels.min()), int(pixels.max())
    ds.WindowCenter, ds.WindowWidth = (lo + hi) // 2, max(hi - lo, 1)
    # not known for a converted picture (type 2: present, empty)
    ds.DetectorType, ds.PositionerType, ds.AcquisitionContextSequence = "", "", []
    ds.AnatomicRegionSequence = [hd.sr.CodedConcept("43799004", "SCT", "Chest")]
    ds.PixelData = pixels.tobytes()
    _save(ds, path)
    return ds
