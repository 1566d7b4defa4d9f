"""The lung mask of a radiograph as a DICOM Segmentation (highdicom), and back."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = ["write_lung_seg", "read_lung_seg"]


def write_lung_seg(
    source: pydicom.Dataset, mask: np.ndarray, *, algorithm: tuple[str, str] | None, series_number: int = 901
) -> pydicom.Dataset:
    """A binary SEG of ``mask`` (rows, cols) 0/1 on ``source``, in its study: one segment "Lung", made by
    ``algorithm`` (name, version; AUTOMATIC) or by hand (``None``: MANUAL)."""
    mask = np.asarray(mask)
    if mask.shape != (source.Rows, source.Columns):
        raise ValueError(f"mask shape {mask.shape} is not the image's ({source.Rows}, {source.Columns})")
    identification = None
    if algorithm is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm[0], family=codes.cid7162.ArtificialIntelligence, version=algorithm[1]
        )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lung",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Lung,
        algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
        algorithm_identification=identification,
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=(mask > 0).astype(np.uint8)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="chest_xray_ssl_multitask",
        manufacturer_model_name=algorithm[0] if algorithm is not None else "manual",
        software_versions=algorithm[1] if algorithm is not None else "1",
        device_serial_number="1",
        omit_empty_frames=False,
        series_description="Lung segmentation",
    )
    # a radiograph has no patient position: the General Image module then needs its orientation (type 2C)
    seg.PatientOrientation = source.get("PatientOrientation", "")
    return seg


def _lung_segments(seg: pydicom.Dataset) -> set[int]:
    """The numbers of the segments that are lungs (by label or SNOMED code), or the only segment there is."""
    lung_codes = {"39607008", "44029006", "3341006"}  # lung, left lung, right lung
    segments = list(seg.SegmentSequence)
    lungs = {
        int(s.SegmentNumber)
        for s in segments
        if "lung" in str(s.get("SegmentLabel", "")).lower()
        or any(c.CodeValue in lung_codes for c in s.get("SegmentedPropertyTypeCodeSequence", []))
    }
    if not lungs and len(segments) == 1:
        lungs = {int(segments[0].SegmentNumber)}
    if not lungs:
        raise ValueError(f"no lung segment among {[str(s.get('SegmentLabel')) for s in segments]}")
    return lungs


def read_lung_seg(seg: pydicom.Dataset) -> tuple[np.ndarray, str]:
    """The (rows, cols) uint8 0/1 lung mask of a SEG of one radiograph (its lung segments together), and the SOP
    Instance UID of the image it segments.

    Read with pydicom: SEGs written by other highdicom versions and by viewers place the segment of each frame in
    the per-frame or the shared functional groups, which highdicom 0.22 does not both accept.
    """
    if seg.get("Modality") != "SEG":
        raise ValueError(f"not a DICOM SEG (Modality {seg.get('Modality')!r})")
    lungs = _lung_segments(seg)
    frames = np.asarray(seg.pixel_array).reshape(-1, seg.Rows, seg.Columns)
    shared = seg.get("SharedFunctionalGroupsSequence", [pydicom.Dataset()])[0]
    mask = np.zeros((seg.Rows, seg.Columns), np.uint8)
    for frame, item in zip(frames, seg.get("PerFrameFunctionalGroupsSequence", [])):
        ident = item.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        if ident and int(ident[0].ReferencedSegmentNumber) in lungs:
            mask |= (frame > 0).astype(np.uint8)
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    return mask, str(referenced)
