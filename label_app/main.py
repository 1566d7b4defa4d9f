"""MONAI Label app serving the chest_xray_ssl_multitask bundle: lung segmentation, classification with saliency,
and lung segmentation retrained from the masks annotators save.

Start it with ``make label`` (the embedded sample as studies) or::

    .venv-label/bin/python -m monailabel.main start_server --app label_app --studies <folder> --host 127.0.0.1

Options (``--conf key value``): ``bundle_root`` (default: this folder's parent); the network served, as ids of
``configs/inference.json``: ``backbone``, ``vit_pool``, ``image_size``, ``lungs_only`` and ``ckpt_file`` (its
weights; default the shipped ``models/model.pt``), e.g. ``--conf backbone vit_s16 --conf ckpt_file <model.pt>``.

With a DICOMweb archive as studies (``--studies http://127.0.0.1:8042/dicom-web``, docs/pacs.md) every CR and DX
series is a study (``--conf modalities CR,DX`` sets others), annotators' final labels are stored there as DICOM
SEG, and ``/infer/lung_segmentation`` with the form field ``params={"dicom_seg": true}`` answers the mask as a SEG
(``output=image``) that it also stores in the source study.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from typing import Any

import pydicom
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from lib.bundle_config import find_bundle_root, network_overrides
from lib.dicomweb import DEFAULT_MODALITIES, RadiographDICOMwebDatastore, dicomweb_datastore
from lib.infers import Classification, LungSegmentation
from lib.trainers import LungSegmentationTrain

logger = logging.getLogger(__name__)

# Studies the bundle reads (MONAI Label's default list has neither .dcm nor .jpeg).
STUDY_EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.dcm"]
mimetypes.add_type("application/dicom", ".dcm")  # the SEG answer's media type (not in Python's table)


class ChestXRayApp(MONAILabelApp):
    """Two infer tasks (``lung_segmentation``, ``classification``) and one train task (``lung_segmentation``)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_root = find_bundle_root(app_dir, conf)
        self.overrides = network_overrides(conf)
        logger.info("bundle root: %s; network: %s", self.bundle_root, self.overrides or "the config's defaults")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="chest_xray_ssl_multitask",
            description="Chest X-ray lung segmentation and classification with saliency",
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            wanted = self.conf.get("modalities", ",".join(DEFAULT_MODALITIES))
            modalities = [m.strip().upper() for m in wanted.split(",") if m.strip()]
            self.studies = self.studies.rstrip("/")
            logger.info("studies: the %s series of the DICOMweb archive %s", "/".join(modalities), self.studies)
            return dicomweb_datastore(self.studies, modalities)
        return LocalDatastore(
            self.studies,
            extensions=STUDY_EXTENSIONS,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {
            "lung_segmentation": LungSegmentation(self.bundle_root, self.app_dir, self.overrides),
            "classification": Classification(self.bundle_root, self.app_dir, self.overrides),
        }

    def init_trainers(self) -> dict[str, TrainTask]:
        return {"lung_segmentation": LungSegmentationTrain(self.bundle_root, self.app_dir, self.overrides)}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's infer, with a 404 for an unknown study or model and a 422 for a study that cannot be
        read (the server answers any other exception with a bare 500)."""
        model, image = request.get("model"), request.get("image")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"no model {model!r}; models: {sorted(self._infers)}")
        store = datastore or self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not store.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"no study {image!r} in the datastore {self.studies}")
        try:
            result = super().infer(request, datastore)
        except MONAILabelException as e:
            status = 422 if e.error == MONAILabelError.INVALID_INPUT else 500
            logger.error("infer %s on %s: %s", model, image, e.msg)
            raise HTTPException(status_code=status, detail=f"study {image!r}: {e.msg}") from None
        seg = result["params"].get("dicom_seg")
        if seg and isinstance(store, RadiographDICOMwebDatastore):
            store.store(pydicom.dcmread(result["file"]))  # into the source study, beside the image
            seg["stored"] = store.name()
        return result
