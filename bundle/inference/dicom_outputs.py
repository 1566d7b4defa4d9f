"""The DICOM objects of one inference image: its lung SEG, findings SR and saliency Secondary Capture, in
``output_dir/dicom/``, beside the source they reference (the input, or a DX image made from it)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .. import __version__
from ..atomic import make_folder
from ..data.readers import detect_format, read_cxr
from .dicom_capture import write_saliency_capture
from .dicom_seg import write_lung_seg
from .dicom_source import radiograph_dataset, read_identities, save_dataset, source_identity
from .dicom_sr import write_findings_sr

__all__ = ["DICOM_MODES", "DICOM_COLUMNS", "DicomOutputError", "DicomOutputs", "algorithm_identity", "overlay_pixels"]

# auto: DICOM inputs only; always: every input (others get a DX source made from their pixels); never: none
DICOM_MODES = ("auto", "always", "never")
DICOM_COLUMNS = ("seg_file", "sr_file", "saliency_dicom_file")
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")
# the patient and study attributes DICOM requires present but allows empty (type 2), which highdicom copies
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


class DicomOutputError(Exception):
    """One image's DICOM object could not be made; the message is that row's status."""


def algorithm_identity(bundle_root: str | os.PathLike | None = None) -> tuple[str, str]:
    """(name, version) of the model: ``configs/metadata.json``'s ``name`` and ``version`` under ``bundle_root``,
    else the package's name and ``bundle.__version__``."""
    try:
        with open(os.path.join(os.fspath(bundle_root or ""), "configs", "metadata.json")) as f:
            meta = json.load(f)
        return str(meta["name"]), str(meta.get("version", __version__))
    except (OSError, ValueError, KeyError, TypeError):
        return "chest_xray_ssl_multitask", __version__


def _check_source(ds: Dataset, path: str) -> Dataset:
    """``ds`` (a DICOM input) if it can be referenced, with the type 2 patient and study attributes it lacks empty.

    Raises:
        ValueError: it lacks a UID or its size, naming ``path`` and what to do.
    """
    missing = [k for k in _REQUIRED if not getattr(ds, k, None)]
    if missing:
        raise ValueError(
            f"the source {path} has no {', '.join(missing)}: a DICOM object cannot reference it; "
            "export the image with its study and series, or use dicom_outputs never"
        )
    for keyword in _TYPE2:  # an export that left them out: empty, as the standard allows
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


class DicomOutputs:
    """Writes ``dicom/<name>_seg.dcm``, ``_sr.dcm`` and ``_saliency.dcm`` for a predictions row (and, for a
    non-DICOM input with ``mode`` "always", ``dicom/<name>_source.dcm``, the DX image they reference).

    Args:
        output_dir: the run's output folder.
        class_names: the model's classes (the SR's measurements).
        mode: one of ``DICOM_MODES``.
        saliency: write the Secondary Capture of the overlay picture.
        identity: the ``dicom_identity`` JSON (patient and study per converted input), or None.
        patients: the datalist's ``patient`` per image path (Patient ID of a converted input).
        algorithm: (name, version) of the model.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        mode: str = "auto",
        saliency: bool = True,
        identity: str | os.PathLike | None = None,
        patients: dict[str, str] | None = None,
        algorithm: Sequence[str] | None = None,
    ) -> None:
        if mode not in DICOM_MODES:
            raise ValueError(f"dicom_outputs must be one of {', '.join(DICOM_MODES)}; got {mode!r}")
        self.folder, self.class_names = os.path.join(output_dir, "dicom"), list(class_names)
        self.mode, self.saliency = mode, saliency
        # highdicom logs every attribute module it copies, a dozen INFO lines per object
        logging.getLogger("highdicom").setLevel(logging.WARNING)
        self.identities = read_identities(identity) if mode == "always" else {}
        self.patients = dict(patients or {})
        self.algorithm = tuple(algorithm) if algorithm else algorithm_identity()

    def wanted(self, path: str) -> bool:
        """Whether the input at ``path`` gets DICOM objects."""
        return self.mode == "always" or (self.mode == "auto" and detect_format(path) == "dicom")

    def _path(self, name: str, kind: str) -> str:
        make_folder(self.folder, "the dicom folder")
        return os.path.join(self.folder, f"{name}_{kind}.dcm")

    def source(self, path: str, name: str, kept: str) -> Dataset:
        """The input itself for DICOM, else a DX image of its pixels written as ``<name>_source.dcm``."""
        if detect_format(path) == "dicom":
            return _check_source(pydicom.dcmread(path), path)
        identity = source_identity(path, name, self.identities, self.patients.get(path))
        ds = radiograph_dataset(
            read_cxr(path), derived_from=os.path.basename(path), series_description="converted input", **identity
        )
        save_dataset(ds, self._path(name, "source"), "the DICOM source", kept)
        return ds

    def _object(self, what: str, make: Callable[[], Dataset], name: str, kind: str, kept: str) -> str:
        """Make one object and write it; a failure to make it is this row's ``DicomOutputError``."""
        try:
            ds = make()
        except Exception as e:
            raise DicomOutputError(f"cannot write DICOM {what} ({type(e).__name__}: {e})") from e
        return save_dataset(ds, self._path(name, kind), f"the DICOM {what}", kept)

    def write(
        self, row: dict[str, Any], name: str, mask: np.ndarray | None, picture: Callable[[], np.ndarray], kept: str
    ) -> None:
        """Fill ``row``'s ``DICOM_COLUMNS``: the SEG of ``mask`` (rows, cols; None: no SEG), the SR of the row, the
        SC of ``picture()`` (rows, cols, 3) uint8.

        Raises:
            DicomOutputError: an object could not be made (its status); a full disk stops the run (``WriteError``).
        """
        try:
            source = self.source(row["image"], name, kept)
        except (ValueError, OSError, InvalidDicomError) as e:  # the SEG and SR need a source: neither is written
            raise DicomOutputError(f"cannot write DICOM SEG and SR ({type(e).__name__}: {e})") from e
        if mask is not None:
            row["seg_file"] = self._object(
                "SEG", lambda: write_lung_seg(source, mask, algorithm=self.algorithm), name, "seg", kept
            )
        row["sr_file"] = self._object(
            "SR", lambda: write_findings_sr(source, row, self.class_names, algorithm=self.algorithm), name, "sr", kept
        )
        if self.saliency:
            row["saliency_dicom_file"] = self._object(
                "SC", lambda: write_saliency_capture(source, picture()), name, "saliency", kept
            )


def overlay_pixels(draw: Callable[[str], str], existing: str | None) -> np.ndarray:
    """The (rows, cols, 3) uint8 RGB pixels of an overlay picture: ``existing`` (a PNG already written), else one
    ``draw(path)`` writes into a temporary folder."""
    if existing:
        return np.asarray(Image.open(existing).convert("RGB"))
    with tempfile.TemporaryDirectory() as folder:
        return np.asarray(Image.open(draw(os.path.join(folder, "overlay.png"))).convert("RGB"))
