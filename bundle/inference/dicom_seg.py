"""The lung mask of a radiograph as a DICOM Segmentation (SEG) object, and back.

A binary SEG with one segment, "Lung" (SNOMED CT 39607008, category 91723000 "Anatomical Structure"), on the
source image's pixel grid, in the source's study and patient and a new series. The segment is AUTOMATIC with
the model's name and version as its algorithm identification when a model drew it, MANUAL when an annotator
did. SEG is the object viewers (OHIF, 3D Slicer) and PACS display as a mask over its source. Works with
highdicom 0.22 / pydicom 2 (the MONAI Label environment) and highdicom 0.28 / pydicom 3.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from .. import __version__
from .dicom_source import MANUFACTURER, new_instance

__all__ = ["LUNG", "ANATOMICAL_STRUCTURE", "SEG_STORAGE", "write_lung_seg", "read_lung_seg"]

LUNG = Code("39607008", "SCT", "Lung")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _description(algorithm: tuple[str, str] | None) -> hd.seg.SegmentDescription:
    """Segment 1, "Lung": AUTOMATIC with the algorithm's (name, version), or MANUAL without one."""
    automatic = algorithm is not None
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lung",
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=LUNG,
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if automatic else hd.seg.SegmentAlgorithmTypeValues.MANUAL
        ),
        algorithm_identification=(
            hd.AlgorithmIdentificationSequence(
                name=algorithm[0], version=algorithm[1], family=hd.sr.CodedConcept("123109", "DCM", "Segmentation")
            )
            if automatic
            else None
        ),
        tracking_uid=hd.UID(),
        tracking_id="lungs",
    )


def _pixel_measures(source: Dataset) -> hd.PixelMeasuresSequence:
    """The source's pixel spacing (Pixel Spacing, else Imager Pixel Spacing, else 1 mm) as the SEG's Pixel Measures.

    Viewers place a SEG with it: OHIF 3 stops on a SEG without Pixel Measures ("Cannot destructure property
    'SpacingBetweenSlices'"), and highdicom adds none for a projection image without a Frame of Reference.
    """
    spacing = getattr(source, "PixelSpacing", None) or getattr(source, "ImagerPixelSpacing", None) or [1.0, 1.0]
    return hd.PixelMeasuresSequence(
        pixel_spacing=[float(v) for v in spacing], slice_thickness=1.0, spacing_between_slices=1.0
    )


def _projection_orientation() -> Dataset:
    """Plane Orientation for a projection radiograph's SEG: [0, 1, 0, 0, 0, -1], rows top to bottom, columns left
    to right of a frontal view, which OHIF 3 assumes for an image without one and needs to match to draw the SEG
    ("Segmentations orthogonal to the acquisition plane ... are not yet supported" otherwise). highdicom writes
    none without a Frame of Reference; the attribute is allowed in the shared functional groups."""
    orientation = Dataset()
    orientation.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    return orientation


def write_lung_seg(
    source: Dataset, mask: np.ndarray, *, algorithm: tuple[str, str] | None, series_number: int = 901
) -> Dataset:
    """A binary DICOM SEG of ``mask`` (rows, cols; bool or 0/1) on ``source``'s pixel grid.

    Args:
        source: the radiograph the mask was drawn on (its patient, study and SOP instance are referenced).
        mask: (Rows, Columns) of ``source``; nonzero is lung.
        algorithm: (name, version) of the model that drew it (AUTOMATIC), or None for an annotator's (MANUAL).
        series_number: the new series' number.
    Raises:
        ValueError: ``mask`` is not (Rows, Columns) of ``source``, with both shapes.
    """
    mask = np.asarray(mask)
    expected = (int(source.Rows), int(source.Columns))
    if mask.shape != expected:
        raise ValueError(
            f"lung mask shape {mask.shape} differs from the source image's (Rows, Columns) {expected}; "
            "give the mask on the source's pixel grid"
        )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=(mask > 0).astype(np.uint8)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(algorithm)],
        # an annotator's mask: the equipment that encoded it is this bundle
        manufacturer_model_name=algorithm[0] if algorithm else MANUFACTURER,
        software_versions=algorithm[1] if algorithm else __version__,
        device_serial_number="none",
        **new_instance(series_number, "Lung segmentation"),
        omit_empty_frames=False,  # an empty mask is still a mask: one frame, all zeros
        pixel_measures=_pixel_measures(source),
    )
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared:
        shared.PlaneOrientationSequence = [_projection_orientation()]
    # General Image asks for it on a projection image's SEG: the source's display orientation, the same grid
    seg.PatientOrientation = getattr(source, "PatientOrientation", None) or ""
    return seg


def read_lung_seg(seg: Dataset) -> tuple[np.ndarray, str]:
    """The (rows, cols) uint8 0/1 lung mask of a SEG written by ``write_lung_seg`` and the SOPInstanceUID of the
    image it references.

    Raises:
        ValueError: ``seg`` is not a single-frame, single-segment SEG with one referenced image.
    """
    if str(getattr(seg, "SOPClassUID", "")) != SEG_STORAGE:
        raise ValueError(f"not a DICOM SEG (SOP class {getattr(seg, 'SOPClassUID', 'missing')})")
    segments = len(getattr(seg, "SegmentSequence", []))
    frames = int(getattr(seg, "NumberOfFrames", 1) or 1)
    if segments != 1 or frames != 1:
        raise ValueError(f"expected one segment in one frame, got {segments} segments in {frames} frames")
    referenced = [
        str(instance.ReferencedSOPInstanceUID)
        for series in getattr(seg, "ReferencedSeriesSequence", [])
        for instance in series.ReferencedInstanceSequence
    ]
    if len(referenced) != 1:
        raise ValueError(f"expected one referenced source image, got {len(referenced)}")
    mask = np.asarray(seg.pixel_array).reshape(int(seg.Rows), int(seg.Columns))
    return (mask > 0).astype(np.uint8), referenced[0]
