"""MONAI Label app serving the chest_xray_ssl_multitask bundle: lung segmentation, classification with saliency,
and lung segmentation retrained from the masks annotators save.

Start it with ``make label`` (the embedded sample as studies) or::

    .venv-label/bin/python -m monailabel.main start_server --app label_app --studies <folder> --host 127.0.0.1

Options (``--conf key value``): ``bundle_root`` (default: this folder's parent); the network served, as ids of
``configs/inference.json``: ``backbone``, ``vit_pool``, ``image_size``, ``lungs_only`` and ``ckpt_file`` (its
weights; default the shipped ``models/model.pt``), e.g. ``--conf backbone vit_s16 --conf ckpt_file <model.pt>``;
``infer_workers``: inferences run at once (default: one per CPU core, each with its share of the cores' threads).

With a DICOMweb archive as studies (``--studies http://127.0.0.1:8042/dicom-web``, docs/pacs.md) every CR and DX
series is a study (``--conf modalities CR,DX`` sets others), annotators' final labels are stored there as DICOM
SEG, and ``/infer/lung_segmentation`` with the form field ``params={"dicom_seg": true}`` answers the mask as a SEG
(``output=image``) that it also stores in the source study.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
import torch
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from lib.bundle_config import find_bundle_root, network_overrides
from lib.checks import RefusedError, check_id, check_train_options
from lib.dicomweb import DEFAULT_MODALITIES, RadiographDICOMwebDatastore, dicomweb_datastore
from lib.infers import Classification, LungSegmentation
from lib.routes import STUDY_SUFFIXES, install_routes, refusals_as_http, upload_folder
from lib.trainers import LungSegmentationTrain
from lib.uncertainty import LungUncertainty, MostUncertain

logger = logging.getLogger(__name__)

# Studies the bundle reads (MONAI Label's default list has neither .dcm nor .jpeg).
STUDY_EXTENSIONS = [f"*{s}" for s in STUDY_SUFFIXES]
mimetypes.add_type("application/dicom", ".dcm")  # the SEG answer's media type (not in Python's table)


def _torch_threads(threads: int) -> None:
    torch.set_num_threads(threads)  # in each inference thread: the cores shared out, not oversubscribed


class ChestXRayApp(MONAILabelApp):
    """Two infer tasks (``lung_segmentation``, ``classification``), one train task (``lung_segmentation``), and
    active learning: the ``lung_uncertainty`` scoring and the ``first``, ``random`` and ``uncertainty`` strategies."""

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
        self.upload_dir = upload_folder()  # studies sent with /infer, and nothing else
        cores = os.cpu_count() or 1
        workers = max(1, int(conf.get("infer_workers", cores)))
        # MONAI Label runs every inference in this pool when it is set (infer_v2 concurrency)
        self._infers_threadpool = ThreadPoolExecutor(
            workers, "INFER", initializer=_torch_threads, initargs=(max(1, cores // workers),)
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

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {"lung_uncertainty": LungUncertainty(self._infers["lung_segmentation"])}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"first": First(), "random": Random(), "uncertainty": MostUncertain()}

    def on_init_complete(self) -> None:
        # only the server process serves HTTP (training and scoring run this app in processes of their own)
        from monailabel.app import app as api

        install_routes(api)
        super().on_init_complete()

    def study_uri(self, image: Any, datastore: Datastore | None = None) -> str:
        """The file of the datastore study ``image`` (an id, never a path), else a 404 (a path: a 400)."""
        uri = (datastore or self.datastore()).get_image_uri(check_id(image, "image"))
        if not uri:
            raise RefusedError(404, f"no study {image!r} in the datastore")
        return uri

    def _image_file(self, image: Any, datastore: Datastore | None) -> str:
        """A study sent with the request (in ``upload_dir``) or the file of a datastore study id."""
        if isinstance(image, str) and os.path.dirname(os.path.realpath(image)) == os.path.realpath(self.upload_dir):
            return image
        return self.study_uri(image, datastore)

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's infer on a datastore study or a study sent with the request, never on another file of the
        server: a 404 for an unknown study or model, a 400 for a path, a 422 for a study that cannot be read."""
        model, image = request.get("model"), request.get("image")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"no model {model!r}; models: {sorted(self._infers)}")
        request = {**request, "image": refusals_as_http(lambda: self._image_file(image, datastore))}
        try:
            result = super().infer(request, datastore)
        except MONAILabelException as e:
            status = 422 if e.error == MONAILabelError.INVALID_INPUT else 500
            logger.error("infer %s on %s: %s", model, image, e.msg)
            raise HTTPException(status_code=status, detail=f"study {os.path.basename(image)!r}: {e.msg}") from None
        made = result["params"].get("dicom_seg") or result["params"].get("dicom_sr")
        store = datastore or self.datastore()
        if made and isinstance(store, RadiographDICOMwebDatastore):
            store.store(pydicom.dcmread(result["file"]))  # into the source study, beside the image
            made["stored"] = store.name()
        return result

    def check_train_request(self, model: str, options: Any) -> None:
        """A 404 for an unknown train task, a 422 for options it does not accept; before a training starts."""
        if model not in self._trainers:
            raise RefusedError(404, f"no train task {model!r}; train tasks: {sorted(self._trainers)}")
        check_train_options(options, self._trainers[model].config(), model)

    def check_strategy(self, strategy: str) -> None:
        """A 404 naming the strategies for an unknown one."""
        if strategy not in self._strategies:
            raise RefusedError(404, f"no strategy {strategy!r}; strategies: {sorted(self._strategies)}")

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """The strategy's study id, without its path, and without MONAI Label's rescoring after every request:
        the scores change only with the weights, and a training rescores when it ends."""
        self.check_strategy(request.get("strategy") or "random")
        res = self._strategies[request.get("strategy") or "random"](request, self.datastore())
        return {k: v for k, v in res.items() if k != "path"} if res and res.get("id") else {}
