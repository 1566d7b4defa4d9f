"""Predictions from Python: a model's probabilities, lung masks, saliency maps and lung attention for files, arrays or
tensors, the numbers ``configs/inference.json`` writes.

::

    import bundle

    model = bundle.load_model("models/model.pt")  # reads models/model.recipe.json; device="cpu" or "cuda"
    result = model.predict(["a.dcm", "b.png"])  # paths, (rows, cols) arrays or tensors
    result.probabilities  # (N, K) float32, columns in result.class_names' order
    result.masks[0], result.saliency[0]  # the first image's lung mask (uint8 0/1) and map, at its own size

Nothing here re-implements a step of the run. ``load_model`` parses ``configs/inference.json`` with MONAI's
``ConfigParser`` and the weights' recipe, runs the config's own checks (its ``run`` steps that check: settings,
recipe), and takes the config's objects: ``preprocessing`` (``LoadCXRd``, then MONAI's area ``Resized`` to
``image_size``), ``network``, ``prepare_batch``, ``inferer`` (``SaliencyInferer``) and ``postprocessing``.
``predict`` runs them as the config's ``SupervisedEvaluator`` runs one iteration, and resizes the masks and maps to
each input as ``PredictionWriter`` does, so its numbers are those of ``predictions.csv``, ``masks/`` and
``saliency/`` for the same files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate
from monai.engines.utils import engine_apply_transform
from monai.networks.utils import eval_mode
from monai.utils import CommonKeys

from ..checkpoints import check_weights, load_weights, read_recipe, recipe_path
from ..data.transforms import STATUS_OK
from ..errors import fail
from ..workflow import ROOT, parser
from .outputs import lung_mask_at, predicted_class, saliency_at

__all__ = ["Predictions", "Predictor", "load_model", "DEFAULT_WEIGHTS", "DEFAULT_SALIENCY"]

DEFAULT_WEIGHTS = ROOT / "models" / "model.pt"
DEFAULT_SALIENCY = "gradcampp"  # configs/inference.json's ``saliency`` (a test keeps them equal)
CONFIG = "inference"
# the config's objects a Predictor runs, as ids of configs/inference.json
PARTS = ("preprocessing", "network", "prepare_batch", "inferer", "postprocessing")
# the values it reports with them
VALUES = ("class_names", "multi_label", "image_size", "batch_size", "saliency", "evaluator#amp", "evaluator#amp_kwargs")


@dataclass
class Predictions:
    """What ``Predictor.predict`` returns for N inputs, in input order (the numbers of ``predictions.csv``).

    Attributes:
        names: each input's file path, or ``array_<i>`` for an array or tensor.
        class_names: the K classes, the order of ``probabilities``' columns.
        probabilities: (N, K) float32: softmax, or per-class sigmoid for a multi-label model.
        masks: N predicted lung masks, each (rows, cols) uint8 0/1 at its input's own size (``masks/`` / 255).
        saliency: N maps, each (rows, cols) float32 in [0, 1] at its input's own size (``saliency/``); None when
            loaded with ``saliency=None``.
        saliency_class: the class each map explains; None without saliency.
        lung_attention: (N,) share of each map's mass inside its lung mask at the network's size; NaN for an
            all-zero map; None without saliency.
        lung_share: (N,) the lung mask's share of the image (a uniform map's attention); None without saliency.
        lung_attention_ratio: (N,) attention / share; NaN where undefined; None without saliency.
        multi_label: how ``predicted`` reads the probabilities.
    """

    names: list[str]
    class_names: list[str]
    probabilities: np.ndarray
    masks: list[np.ndarray]
    saliency: list[np.ndarray] | None
    saliency_class: list[str] | None
    lung_attention: np.ndarray | None
    lung_share: np.ndarray | None
    lung_attention_ratio: np.ndarray | None
    multi_label: bool = False

    @property
    def predicted(self) -> list[str]:
        """Each input's predicted class (``;``-joined classes over 0.5 for a multi-label model), as the CSV's."""
        return [predicted_class(p, self.class_names, self.multi_label) for p in self.probabilities]

    def __len__(self) -> int:
        return len(self.names)


def _picture(item: Any) -> Any:
    """One input of a list: a tensor as a numpy array, and an array's leading unit dims dropped ((1, 1, rows, cols)
    is one picture); anything else as it is."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    while isinstance(item, np.ndarray) and item.ndim > 2 and item.shape[0] == 1:
        item = item[0]
    return item


def _items(inputs: Any) -> list[Any]:
    """``inputs`` as a list of single pictures: a path, a 2-D array, or the pictures of a stack.

    A numpy array or tensor of 2 dims is one picture (rows, cols); of 3 dims (N, rows, cols) or 4 dims
    (N, 1, rows, cols) it is N pictures. A list or tuple holds any mix of paths, arrays and tensors, one picture
    each.
    """
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().numpy()
    if isinstance(inputs, np.ndarray):
        stack = inputs[:, 0] if inputs.ndim == 4 and inputs.shape[1] == 1 else inputs
        return list(stack) if stack.ndim == 3 else [inputs]
    if isinstance(inputs, Iterable) and not isinstance(inputs, (bytes, dict)):
        return [_picture(x) for x in inputs]
    fail(f"predict: got {type(inputs).__name__}; give a file path, an array or tensor, or a list of them")


def _entry(item: Any, index: int) -> dict[str, Any]:
    """The entry ``LoadCXRd`` reads: a file's path, or an array with its name ``array_<index>``."""
    if isinstance(item, (str, os.PathLike)):
        return {"image": os.fspath(item)}
    if isinstance(item, np.ndarray):
        return {"image": item, "name": f"array_{index}"}
    fail(
        f"predict: input {index} is of type {type(item).__name__}; give file paths (str or Path), "
        "(rows, cols) numpy arrays or torch tensors"
    )


class Predictor:
    """A model loaded by ``load_model``: ``predict`` runs configs/inference.json's objects on given inputs.

    Attributes:
        class_names, multi_label, image_size, saliency, device, batch_size: as the weights' recipe and
            ``load_model`` set them.
        network: the classification view (``MultiTaskClassifier``), on ``device``, weights loaded.
    """

    def __init__(self, parts: dict[str, Any], values: dict[str, Any], device: torch.device) -> None:
        self.preprocessing, self.network, self.prepare_batch, self.inferer, self.postprocessing = (
            parts[name] for name in PARTS
        )
        self.class_names: list[str] = list(values["class_names"])
        self.multi_label: bool = bool(values["multi_label"])
        self.image_size: int = int(values["image_size"])
        self.batch_size: int = int(values["batch_size"])
        self.saliency: str | None = None if values["saliency"] == "none" else values["saliency"]
        self.amp, self.amp_kwargs = bool(values["evaluator#amp"]), dict(values["evaluator#amp_kwargs"])
        self.device = device

    def __repr__(self) -> str:
        return (
            f"Predictor(classes={self.class_names}, image_size={self.image_size}, saliency={self.saliency!r}, "
            f"device={str(self.device)!r})"
        )

    def preprocess(self, inputs: Any) -> list[dict[str, Any]]:
        """Each input read and resized by the config's ``preprocessing``: ``image`` (1, S, S) float32 in [0, 1]
        (S = ``image_size``), ``orig_shape``, ``name``, ``image_path``, ``status``.

        Raises:
            UserError: an input of another type, or inputs that cannot be read: every one of them named, with why.
        """
        items = [self.preprocessing(_entry(item, i)) for i, item in enumerate(_items(inputs))]
        if not items:
            fail("predict: no inputs; give a file path, an array or tensor, or a list of them")
        bad = [f"  - {d['image_path']}: {d['status']}" for d in items if d["status"] != STATUS_OK]
        if bad:
            fail(
                f"predict: {len(bad)} of {len(items)} inputs cannot be read, nothing was predicted:\n" + "\n".join(bad)
            )
        return items

    def _run_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """One iteration of the config's ``SupervisedEvaluator`` (MONAI's ``_iteration`` and its registered
        postprocessing, ``decollate`` false) on ``items``; returns the postprocessed output."""
        batch = list_data_collate(items)  # what MONAI's DataLoader collates
        inputs, targets = self.prepare_batch(batch, self.device)
        output = {CommonKeys.IMAGE: inputs, CommonKeys.LABEL: targets}
        with eval_mode(self.network):
            with torch.autocast("cuda", **self.amp_kwargs) if self.amp else nullcontext():
                output[CommonKeys.PRED] = self.inferer(inputs, self.network)
        _, output = engine_apply_transform(batch, output, self.postprocessing)
        return output

    def predict(self, inputs: Any) -> Predictions:
        """Probabilities, lung masks, saliency maps and lung attention of ``inputs``, as configs/inference.json.

        Args:
            inputs: a file path (PNG, JPEG, DICOM, NIfTI: anything the run reads), a numpy array or torch tensor
                (rows, cols) in its own intensity units (min-max scaled like a file's pixels), a stack
                (N, rows, cols) or (N, 1, rows, cols), or a list mixing them. Inputs run in batches of
                ``batch_size`` (configs/inference.json's), in order.

        Returns:
            ``Predictions``: (N, K) probabilities; masks and maps at each input's own size.

        Raises:
            UserError: an input of another type or one that cannot be read (all of them named, nothing run).
        """
        items = self.preprocess(inputs)
        outs = [self._run_batch(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return self._collect(items, outs)

    def _collect(self, items: list[dict[str, Any]], outs: list[dict[str, Any]]) -> Predictions:
        """The batches' outputs as ``Predictions``: masks and maps resized to each input (``PredictionWriter``'s
        functions ``lung_mask_at``, ``saliency_at``)."""

        def cat(key: str) -> np.ndarray:
            return torch.cat([o[key].detach().float().cpu() for o in outs]).numpy()

        shapes = [tuple(int(s) for s in d["orig_shape"]) for d in items]
        lung_prob = cat("lung_prob")[:, 0]
        with_maps = self.saliency is not None
        maps = torch.cat([o[CommonKeys.PRED]["saliency"].detach().float().cpu() for o in outs]) if with_maps else None
        classes = torch.cat([o[CommonKeys.PRED]["saliency_class"].cpu() for o in outs]).tolist() if with_maps else []
        return Predictions(
            names=[d["image_path"] for d in items],
            class_names=self.class_names,
            probabilities=cat("prob").astype(np.float32),
            masks=[lung_mask_at(p, s) for p, s in zip(lung_prob, shapes)],
            saliency=[saliency_at(m[0].numpy(), s) for m, s in zip(maps, shapes)] if with_maps else None,
            saliency_class=[self.class_names[int(k)] for k in classes] if with_maps else None,
            lung_attention=cat("lung_attention") if with_maps else None,
            lung_share=cat("lung_share") if with_maps else None,
            lung_attention_ratio=cat("lung_attention_ratio") if with_maps else None,
            multi_label=self.multi_label,
        )


def _is_cuda(device: Any) -> bool:
    """Whether ``device`` names a CUDA device (False for one torch refuses: the config's check names it)."""
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def _check_steps(config: Any) -> list[str]:
    """The ids of the config's ``run`` steps that check (settings, recipe, class names): every step but the ones
    that lock the output folder or run the engine."""
    return [f"run#{i}" for i, step in enumerate(config["run"]) if ".check" in str(step)]


def load_model(
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    saliency: str | None = DEFAULT_SALIENCY,
    **settings: Any,
) -> Predictor:
    """A model ready to ``predict``: configs/inference.json's preprocessing, network, inferer and postprocessing,
    with ``weights`` loaded, checked as a ``python -m monai.bundle run`` of that config checks them.

    Args:
        weights: a ``model.pt`` with its recipe (``model.recipe.json``) beside it; None: the shipped
            ``models/model.pt``. The recipe gives the backbone, image size, classes and the other network settings.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a ``torch.device``. On CUDA, mixed precision and
            channels-last weights are used as the config uses them there (``amp``, ``channels_last``).
        saliency: ``"gradcampp"`` (the config's default), ``"gradcam"``, ``"occlusion"``, for a ViT also
            ``"rollout"`` and ``"attention_gradient"``, or None for no maps (faster: no gradients; no lung
            attention either).
        settings: other ids of configs/inference.json, e.g. ``saliency_layer="encoder.layer4"``,
            ``saliency_class="covid19"``, ``batch_size=16``.

    Raises:
        UserError: one message: a missing weights file or recipe, an id the config does not define, a setting
            that cannot be used (the config's own checks), weights that do not fit the network.
    """
    weights = os.path.abspath(os.fspath(DEFAULT_WEIGHTS if weights is None else weights))
    if not os.path.isfile(weights):
        fail(f"load_model: no weights file {weights}; give the path of a model.pt (configs/train.json writes one)")
    if not read_recipe(weights, "load_model"):
        fail(
            f"load_model: {weights} has no recipe ({recipe_path(weights)} not found), which records the backbone, "
            "image size and classes the weights need; copy it from where the weights came (configs/train.json "
            "writes it beside model.pt)"
        )
    cuda = _is_cuda(device)
    # nothing is written: a writable folder for output_dir and an existing one for dataset_dir (neither is used)
    # keep the config's checks of those ids quiet
    overrides = {"amp": cuda, "channels_last": cuda, **settings}
    overrides.update(ckpt_file=weights, ckpt_dir=os.path.dirname(weights), saliency=saliency or "none")
    overrides.update(device=str(device), output_dir=tempfile.gettempdir(), dataset_dir=os.path.dirname(weights))
    config = parser(CONFIG, overrides)
    for step in _check_steps(config):
        config.get_parsed_content(step)
    parts = {name: config.get_parsed_content(name) for name in PARTS}
    values = {name: config.get_parsed_content(name) for name in VALUES}
    # what the config's CheckpointLoader loads: the checked file (or its plain copy), strictly, onto the device
    dev = torch.device(config.get_parsed_content("device"))
    state = load_weights(check_weights(weights, parts["network"]), map_location=dev, name="ckpt_file")
    parts["network"].load_state_dict(state, strict=True)
    return Predictor(parts, values, dev)
