"""MONAI Label infer tasks that run the bundle's own inference recipe (``configs/inference.json``) on one study.

Both tasks take the config's ``network_def``, ``preprocessing``, ``inferer`` (``SaliencyInferer``) and
``postprocessing`` (``InferenceOutputs``), then bring the outputs to the study's own size with the functions the
bundle's ``PredictionWriter`` uses, so a mask served here equals the one ``configs/inference.json`` writes.

MONAI Label's ``BundleInferTask`` is not used: it runs one image at a time through transforms written for
batches, keeps only a tensor ``pred`` (this network returns a dict) and can only build ``network_def``.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
from typing import Any, Callable, Sequence

import numpy as np
import pydicom
import torch
from monai.inferers import Inferer
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from PIL import Image

from bundle.data.transforms import STATUS_OK
from bundle.inference.dicom_outputs import algorithm_identity
from bundle.inference.dicom_seg import write_lung_seg
from bundle.inference.dicom_source import save_dataset
from bundle.inference.dicom_sr import write_findings_sr
from bundle.inference.outputs import lung_mask_at, saliency_at

from .bundle_config import inference_config, weights_paths

__all__ = ["LungSegmentation", "Classification", "LoadStudy"]


class LoadStudy:
    """The config's preprocessing on the study file; its outputs join the request (MONAI Label keeps its keys).

    A study the bundle cannot read becomes one ``INVALID_INPUT`` error naming the study and the reason.
    """

    def __init__(self, preprocessing: Callable) -> None:
        self.preprocessing = preprocessing

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        path = data.get("image")
        if not isinstance(path, str) or not path:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "no study file in the request")
        out = self.preprocessing({"image": path})
        if out["status"] != STATUS_OK:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{os.path.basename(path)}: {out['status']}")
        d = dict(data)
        d["image"] = out["image"]  # (1, image_size, image_size)
        d["orig_shape"] = tuple(int(s) for s in out["orig_shape"])  # (rows, cols) of the study
        return d


class BundleInferTask(BasicInferTask):
    """One study through ``configs/inference.json``; subclasses write what their model returns.

    Args:
        bundle_root: the bundle folder (``configs/``, ``models/``).
        app_dir: the app folder; trained weights are published to ``<app_dir>/model/model.pt``.
        labels: the labels MONAI Label shows; the config's ``class_names`` when not given.
        overrides: config ids to override, e.g. ``{"saliency": "none"}``.
    """

    def __init__(
        self,
        bundle_root: str,
        app_dir: str,
        type: str,
        description: str,
        labels: dict[str, int] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.bundle_config = inference_config(bundle_root, **(overrides or {}))
        self.bundle_root, self.app_dir = os.path.abspath(bundle_root), os.path.abspath(app_dir)
        self._network_lock, self._local = threading.Lock(), threading.local()
        c = self.bundle_config
        self.class_names = list(c.get_parsed_content("class_names"))
        self.multi_label = bool(c.get_parsed_content("multi_label"))
        self.saliency_method = c.get_parsed_content("saliency")
        self.bundle_preprocessing = c.get_parsed_content("preprocessing")
        self.bundle_inferer: Inferer = c.get_parsed_content("inferer")
        self.bundle_postprocessing = c.get_parsed_content("postprocessing")
        super().__init__(
            path=weights_paths(c, app_dir),
            network=c.get_parsed_content("network_def"),
            type=type,
            labels=labels if labels is not None else self.class_names,
            dimension=2,
            description=description,
            load_strict=True,  # every key of the bundle's weights: a silent partial load would serve noise
        )

    def pre_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        return [LoadStudy(self.bundle_preprocessing)]

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        return []  # the bundle's postprocessing runs in run_inferer, on the batch it was written for

    def public_weights(self, path: str) -> str:
        """How answers name a weights file: ``app/model/model.pt`` (trained here), else relative to the bundle root
        (``models/model.pt``), else its file name; never a server path."""
        path = os.path.abspath(path)
        for root, prefix in ((self.app_dir, "app/"), (self.bundle_root, "")):
            if path.startswith(root + os.sep):
                return prefix + os.path.relpath(path, root)
        return os.path.basename(path)

    def _get_network(self, device: str, data: Any) -> torch.nn.Module:
        """This thread's copy of the served network. The weights are read once (behind a lock: MONAI Label's cache
        is not thread-safe) and again only when a training publishes new ones; each inference thread runs its own
        copy, as Grad-CAM's hooks record activations on the network object."""
        with self._network_lock:
            shared = super()._get_network(device, data)
        if getattr(self._local, "source", None) is not shared:
            self._local.network, self._local.source = copy.deepcopy(shared), shared
        return self._local.network

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Network, ``SaliencyInferer`` and ``InferenceOutputs`` on a batch of one; adds ``outputs`` (batched)."""
        network = self._get_network(device, data)
        x = torch.as_tensor(data["image"])[None].to(torch.device(device))
        pred = self.bundle_inferer(x, network)
        data["outputs"] = self.bundle_postprocessing({"pred": pred})
        data["weights"] = self.public_weights(self.get_path())
        return data

    def _result_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"weights": data.get("weights"), "image_size": list(data["orig_shape"])}


def _temp_png(array: np.ndarray) -> str:
    """Write a uint8 (rows, cols) array as a PNG the server sends and then deletes."""
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
        Image.fromarray(array).save(f, format="PNG")
    return f.name


def _dicom_source(source_path: str, what: str) -> pydicom.Dataset:
    """The DICOM study an object refers to; a study that is not DICOM is one ``INVALID_INPUT`` error."""
    try:
        return pydicom.dcmread(source_path)
    except (pydicom.errors.InvalidDicomError, OSError):
        name = os.path.basename(source_path)
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, f"{name}: a DICOM {what} needs a DICOM study"
        ) from None


def _temp_dicom(ds: pydicom.Dataset, source: pydicom.Dataset) -> tuple[str, dict[str, Any]]:
    """``ds`` as a file the server sends and then deletes, and its UIDs and size for the JSON answer."""
    with tempfile.NamedTemporaryFile(suffix=".dcm", delete=False) as f:
        path = f.name
    save_dataset(ds, path)
    uids = {k: str(ds.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    return path, {**uids, "referenced_sop_instance_uid": str(source.SOPInstanceUID), "bytes": os.path.getsize(path)}


def _temp_seg(source_path: str, mask: np.ndarray, algorithm: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    """The lung ``mask`` (rows, cols) of a DICOM study as a SEG file the server sends and then deletes, and its
    UIDs."""
    source = _dicom_source(source_path, "SEG")
    return _temp_dicom(write_lung_seg(source, mask, algorithm=algorithm), source)


def _findings_row(result: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """A classification answer as the predictions.csv row the findings SR is written from."""
    predicted = result["predicted"]
    row: dict[str, Any] = {"predicted": ";".join(predicted) if isinstance(predicted, list) else predicted}
    row.update({f"prob_{p['label']}": p["score"] for p in result["prediction"]})
    for key in ("lung_attention", "lung_share", "lung_attention_ratio"):
        if key in outputs:
            row[key] = float(outputs[key][0])  # NaN: left out of the SR
    return row


class LungSegmentation(BundleInferTask):
    """The lung mask of a study: a PNG label at the study's own size (rows, cols), 1 = lung, 0 = background; with
    ``{"dicom_seg": true}`` in the request's params, a DICOM SEG of a DICOM study instead (its UIDs in the JSON).

    ``overrides``: config ids of the served network (``network_overrides``).
    """

    def __init__(self, bundle_root: str, app_dir: str, overrides: dict[str, Any] | None = None) -> None:
        self.algorithm = algorithm_identity(bundle_root)  # what a SEG names: this bundle at this version
        # the mask does not depend on the saliency map, so none is computed
        super().__init__(
            bundle_root,
            app_dir,
            type=InferType.SEGMENTATION,
            description="Lung segmentation (multi-task network of the bundle)",
            labels={"lung": 1},
            overrides={**(overrides or {}), "saliency": "none"},
        )

    def lung_probabilities(self, path: str, views: Callable[[torch.Tensor], torch.Tensor], device: str) -> torch.Tensor:
        """The (V, 1, image_size, image_size) lung probabilities of the ``views`` (a function of the (1, 1, S, S)
        preprocessed study) of the study file ``path``."""
        data = LoadStudy(self.bundle_preprocessing)({"image": path})
        device = "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
        x = views(torch.as_tensor(data["image"])[None]).to(torch.device(device))
        with torch.no_grad():
            pred = self.bundle_inferer(x, self._get_network(device, data))
        return self.bundle_postprocessing({"pred": pred})["lung_prob"].float().cpu()

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        lung_prob = data["outputs"]["lung_prob"][0, 0].detach().float().cpu().numpy()
        mask = lung_mask_at(lung_prob, data["orig_shape"])
        result = self._result_json(data)
        result["lung_fraction"] = float(mask.mean())
        if data.get("dicom_seg"):
            path, result["dicom_seg"] = _temp_seg(data["image_path"], mask, self.algorithm)
            return path, result
        return _temp_png(mask), result


class Classification(BundleInferTask):
    """Class probabilities, the predicted class and the lung attention (JSON), and the saliency map as a PNG
    (0-255 at the study's own size); with ``{"dicom_sr": true}`` in the request's params, the findings as a DICOM
    SR (TID 1500, ``bundle.inference.dicom_sr``) of a DICOM study instead (its UIDs in the JSON).

    ``overrides``: config ids of the served network (``network_overrides``).
    """

    def __init__(self, bundle_root: str, app_dir: str, overrides: dict[str, Any] | None = None) -> None:
        self.algorithm = algorithm_identity(bundle_root)  # what an SR names: this bundle at this version
        super().__init__(
            bundle_root,
            app_dir,
            type=InferType.CLASSIFICATION,
            description="Classification with saliency and lung attention (multi-task network of the bundle)",
            overrides=overrides,
        )

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str | None, dict]:
        out = data["outputs"]
        prob = out["prob"][0].detach().float().cpu().numpy()
        result = self._result_json(data)
        # MONAI Label's classification result format (its ClassificationWriter), plus what the bundle adds
        result["prediction"] = [
            {"idx": i, "label": c, "score": float(p)} for i, (c, p) in enumerate(zip(self.class_names, prob))
        ]
        if self.multi_label:
            result["predicted"] = [c for c, p in zip(self.class_names, prob) if p > 0.5]
        else:
            result["predicted"] = self.class_names[int(prob.argmax())]
        result["multi_label"] = self.multi_label
        result["saliency_method"] = self.saliency_method
        pred = out["pred"]
        if "lung_attention" in out:
            value = float(out["lung_attention"][0])
            result["lung_attention"] = None if np.isnan(value) else value
        if "saliency_class" in pred:
            result["saliency_class"] = self.class_names[int(pred["saliency_class"][0])]
        if data.get("dicom_sr"):
            source = _dicom_source(data["image_path"], "SR")
            sr = write_findings_sr(source, _findings_row(result, out), self.class_names, algorithm=self.algorithm)
            path, result["dicom_sr"] = _temp_dicom(sr, source)
            return path, result
        if "saliency" not in pred:
            return None, result
        saliency = saliency_at(pred["saliency"][0, 0].detach().float().cpu().numpy(), data["orig_shape"])
        return _temp_png(np.round(saliency * 255).astype(np.uint8)), result
