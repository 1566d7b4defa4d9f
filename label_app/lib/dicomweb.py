"""The app's studies in a DICOMweb archive (a PACS such as Orthanc): radiographs in, lung masks back as DICOM SEG.

MONAI Label's ``DICOMWebDatastore`` is written for CT volumes: it finds ``Modality CT`` series and converts each
series to NIfTI with ITK. This one finds the radiograph modalities (``CR``, ``DX`` by default; one QIDO-RS search
each, since not every archive matches a list of values) and gives the tasks the instance itself, a local ``.dcm``
file: the bundle's reader applies the DICOM display pipeline to it (rescale, VOI LUT window, MONOCHROME1
inversion), which the NIfTI conversion drops, so a study served from the archive gives the same mask and
probabilities as the same file given to ``configs/inference.json``; and the SEG written from it references the
archive's own SOP instance.

Labels: a final label saved by an annotator (a PNG or NIfTI mask, or a DICOM SEG) is stored in the archive as a
SEG of the source image in its study, made by hand (``SegmentAlgorithmType MANUAL``). Training reads the newest
MANUAL SEG of each image; the SEGs the model writes (AUTOMATIC) are not labels.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from bundle.data.readers import CXRReadError, read_mask
from bundle.inference.dicom_seg import read_lung_seg, write_lung_seg
from bundle.inference.dicom_source import save_dataset

__all__ = ["RadiographDICOMwebDatastore", "dicomweb_datastore", "DEFAULT_MODALITIES"]

logger = logging.getLogger(__name__)

DEFAULT_MODALITIES = ("CR", "DX")


def _value(item: dict[str, Any], tag: str) -> str:
    """One value of a DICOM JSON object (QIDO-RS answer), or ''."""
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


class RadiographDICOMwebDatastore(DICOMWebDatastore):
    """Radiographs (``modalities``) of a DICOMweb archive as studies, each a series id; labels as SEG there.

    ``cache_path``: where instances are downloaded (MONAI Label's default: ``~/.cache/monailabel/dicom``).
    """

    def __init__(self, client: DICOMwebClient, modalities: Sequence[str], cache_path: str | None = None) -> None:
        self.modalities = tuple(modalities)
        super().__init__(
            client,
            search_filter={"Modality": "\\".join(self.modalities)},  # searched one modality at a time
            cache_path=cache_path,
            fetch_by_frame=False,
            convert_to_nifti=False,
        )

    @contextmanager
    def _archive(self) -> Iterator[None]:
        """An archive that cannot be reached or refuses a request: one 502 naming it, not a stack trace."""
        try:
            yield
        except requests.RequestException as e:
            raise HTTPException(502, f"DICOMweb archive {self._client.base_url}: {e}") from None

    def _series(self, **filters: str) -> list[dict[str, Any]]:
        with self._archive():
            return self._client.search_for_series(search_filters=filters)

    def list_images(self) -> list[str]:
        """The series ids of every radiograph in the archive (no cache: an upload shows at once)."""
        return [_value(s, "0020000E") for m in self.modalities for s in self._series(Modality=m)]

    def _download(self, series_uid: str, folder: str) -> str:
        """The first instance of a series as ``<folder>/<SOPInstanceUID>.dcm`` (downloaded once), or ''."""
        if os.path.isdir(folder):
            files = sorted(f for f in os.listdir(folder) if f.endswith(".dcm"))
            if files:
                return os.path.join(folder, files[0])
        found = self._series(SeriesInstanceUID=series_uid)
        if not found:
            return ""
        with self._archive():
            instances = self._client.retrieve_series(_value(found[0], "0020000D"), series_uid)
        if len(instances) > 1:
            logger.warning("series %s has %d instances; the first is served", series_uid, len(instances))
        instance = sorted(instances, key=lambda ds: int(ds.get("InstanceNumber") or 0))[0]
        os.makedirs(folder, exist_ok=True)
        return save_dataset(instance, os.path.join(folder, f"{instance.SOPInstanceUID}.dcm"))

    def get_image_uri(self, image_id: str) -> str:
        """The study's DICOM file in the cache, downloaded from the archive on first use; '' for an unknown id."""
        return self._download(image_id, os.path.join(self._datastore.image_path(), image_id))

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        info = self._dicom_info(image_id) if self._series(SeriesInstanceUID=image_id) else {}
        return {**info, "path": self.get_image_uri(image_id)} if info else {}

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """A final label is a SEG series of the archive (its id): its file in the cache."""
        if label_tag != DefaultLabelTag.FINAL:
            return super().get_label_uri(label_id, label_tag)
        return self._download(label_id, os.path.join(self._datastore.label_path(label_tag), label_id))

    def store(self, ds: Dataset) -> str:
        """STOW-RS ``ds`` into the archive; returns its SeriesInstanceUID."""
        with self._archive():
            self._client.store_instances([ds])
        logger.info("stored %s %s in study %s", ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID)
        return str(ds.SeriesInstanceUID)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        """Store an annotator's lung mask (PNG/NIfTI 0/1 mask, or a SEG of this image) as a MANUAL SEG in the
        source study; returns the SEG's series id. Only final labels are kept (in the archive)."""
        if label_tag != DefaultLabelTag.FINAL:
            raise HTTPException(422, f"label tag {label_tag!r}: only final labels are stored in the archive")
        source_file = self.get_image_uri(image_id)
        if not source_file:
            raise HTTPException(404, f"no study {image_id!r} in the archive {self._client.base_url}")
        source = pydicom.dcmread(source_file)
        mask = _label_mask(label_filename, source, image_id)
        return self.store(write_lung_seg(source, mask, algorithm=None))

    def _manual_labels(self) -> dict[str, str]:
        """The newest MANUAL SEG series of each radiograph: {image series id: SEG series id}."""
        newest: dict[str, tuple[str, str]] = {}
        for seg in self._series(Modality="SEG"):
            study, series = _value(seg, "0020000D"), _value(seg, "0020000E")
            with self._archive():
                meta = Dataset.from_json(self._client.retrieve_series_metadata(study, series)[0])
            segments, referenced = meta.get("SegmentSequence", []), meta.get("ReferencedSeriesSequence", [])
            if not segments or not referenced or segments[0].get("SegmentAlgorithmType") != "MANUAL":
                continue
            image = str(referenced[0].SeriesInstanceUID)
            when = f"{meta.get('ContentDate', '')}{meta.get('ContentTime', '')}"
            if image not in newest or when > newest[image][0]:
                newest[image] = (when, series)
        images = set(self.list_images())
        return {image: series for image, (_, series) in newest.items() if image in images}

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return list(self._manual_labels())

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """(image, label) files of every radiograph with a MANUAL SEG: the DICOM image and the SEG."""
        pairs = []
        for image, seg in self._manual_labels().items():
            pairs.append({"image": self.get_image_uri(image), "label": self.get_label_uri(seg, DefaultLabelTag.FINAL)})
        return pairs

    def status(self) -> dict[str, Any]:
        labeled = len(self._manual_labels())
        return {"total": len(self.list_images()), "completed": labeled, "label_tags": {"final": labeled}}

    def json(self) -> dict[str, Any]:
        """``GET /datastore/?output=all``: each radiograph series with its patient, study and modality."""
        labeled = self._manual_labels()
        objects = {}
        for m in self.modalities:
            for s in self._series(Modality=m):
                uid = _value(s, "0020000E")
                info = {"PatientID": _value(s, "00100020"), "StudyInstanceUID": _value(s, "0020000D"), "Modality": m}
                seg = labeled.get(uid)
                objects[uid] = {"image": {"info": info}, "labels": {"final": {"info": {"SEG": seg}}} if seg else {}}
        return {"name": self.name(), "objects": objects}


def _label_mask(label_filename: str, source: Dataset, image_id: str):
    """A saved label as a (rows, cols) 0/1 mask of ``source``; a 422 naming the study and what is wrong otherwise
    (the server saved the upload under a temporary name)."""
    name = f"of study {image_id}"
    if label_filename.lower().endswith(".dcm"):
        seg = pydicom.dcmread(label_filename)
        try:
            mask, referenced = read_lung_seg(seg)
        except Exception as e:  # highdicom raises several types for a SEG it cannot parse
            raise HTTPException(422, f"label {name}: not a lung SEG this app reads ({e})") from None
        if referenced != source.SOPInstanceUID:
            raise HTTPException(422, f"label {name}: a SEG of image {referenced}, not of {source.SOPInstanceUID}")
    else:
        try:
            mask = read_mask(label_filename)
        except CXRReadError as e:
            raise HTTPException(422, f"label {name}: {e.reason}") from None
    if mask.shape != (source.Rows, source.Columns):
        raise HTTPException(
            422, f"label {name}: mask of shape {mask.shape}, the image is ({source.Rows}, {source.Columns})"
        )
    return mask


def dicomweb_datastore(url: str, modalities: Sequence[str] = DEFAULT_MODALITIES) -> RadiographDICOMwebDatastore:
    """The datastore of the archive at ``url`` (its DICOMweb root), with MONAI Label's DICOMweb settings: user
    and password (``MONAI_LABEL_DICOMWEB_USERNAME``/``PASSWORD``), URL prefixes and cache path."""
    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session = create_session_from_user_pass(
            settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
        )
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or settings.MONAI_LABEL_DATASTORE_CACHE_PATH).strip()
    return RadiographDICOMwebDatastore(client, modalities, cache_path=cache or None)
