"""The saliency overlay picture of a radiograph (what ``overlays/*.png`` shows) as a DICOM Secondary Capture.

Secondary Capture, not a Parametric Map: every PACS viewer displays an SC image, while parametric maps are
rarely displayed at all. The object is a picture for reading - the radiograph in grey, the heat map, the lung
contour, the caption and the colour bar burned into RGB pixels - not numbers: the saliency values themselves
are in ``saliency/`` and the lung attention in the SR. It joins the source's patient and study in a new series
(highdicom's ``SCImage.from_ref_dataset``, in highdicom 0.22 and 0.28 alike).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from .dicom_source import new_instance

__all__ = ["write_saliency_capture", "read_capture_pixels"]


def write_saliency_capture(source: Dataset, picture: np.ndarray, *, series_number: int = 903) -> Dataset:
    """A Secondary Capture image of ``picture`` (rows, cols, 3) uint8 RGB in ``source``'s study.

    Raises:
        ValueError: ``picture`` is not (rows, cols, 3) uint8.
    """
    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"the overlay picture must be (rows, cols, 3) uint8 RGB; got {picture.shape} {picture.dtype}")
    orientation = tuple(getattr(source, "PatientOrientation", None) or ("L", "F"))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(picture),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=orientation,
        **new_instance(series_number, "Saliency overlay"),
    )
    # General Series asks for it where the body part may be paired (the source's body part is copied); the chest
    # is not paired, so it is empty
    sc.Laterality = ""
    # the caption names the prediction, never the patient; the radiograph's own pixels are the source's
    if getattr(source, "BurnedInAnnotation", None):
        sc.BurnedInAnnotation = source.BurnedInAnnotation
    sc.ImageComments = "Saliency overlay for reading (heat map, lung contour, prediction); not measurements"
    return sc


def read_capture_pixels(sc: Dataset) -> np.ndarray:
    """The (rows, cols, 3) uint8 RGB pixels of a Secondary Capture written by ``write_saliency_capture``."""
    return np.asarray(sc.pixel_array, dtype=np.uint8).reshape(int(sc.Rows), int(sc.Columns), 3)
