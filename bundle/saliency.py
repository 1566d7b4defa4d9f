"""Saliency maps for the classification head, computed inside MONAI engines, and the lung-attention score.

The maps come from MONAI's ``GradCAM`` / ``GradCAMpp`` (gradient-based) and ``OcclusionSensitivity``
(perturbation-based). ``SaliencyInferer`` is a MONAI ``Inferer``: a ``SupervisedEvaluator`` calls it under
``torch.no_grad()`` and it re-enables gradients only where a map needs them, so class logits, the lung
segmentation and the map come out of one call, on a batch, on CPU or CUDA.

``lung_attention`` is the share of a map's mass that falls inside a lung mask: near 1 when the classifier looks at
the lungs, low when it relies on text markers, borders or devices outside them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
from torch import nn

from .networks.multitask import class_probabilities
from .settings import as_bool

__all__ = [
    "SALIENCY_METHODS",
    "default_target_layer",
    "normalize_maps",
    "lung_attention",
    "attention_and_masks",
    "BatchClassScoreHooks",
    "SaliencyInferer",
]

SALIENCY_METHODS = ("gradcampp", "gradcam", "occlusion", "none")


def default_target_layer(network: nn.Module) -> str:
    """The layer whose activations Grad-CAM explains: the deepest encoder stage, i.e. the classifier's input.

    ``encoder.layer4`` for MONAI's ResNet encoders and the last MBConv stack (``encoder._blocks.<n-1>``, 7 stacks
    for every efficientnet-b*) for EfficientNet encoders; both produce the feature map the classifier pools.
    """
    encoder = getattr(network, "encoder", None)
    if encoder is None:
        raise ValueError(f"{type(network).__name__} has no 'encoder'; set saliency_layer to a module name")
    if hasattr(encoder, "layer4"):
        return "encoder.layer4"
    blocks = getattr(encoder, "_blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks):
        return f"encoder._blocks.{len(blocks) - 1}"
    raise ValueError(f"no default saliency layer for encoder {type(encoder).__name__}; set saliency_layer")


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each non-negative map of a batch (B, 1, H, W) to [0, 1] by its maximum; an all-zero map stays zero.

    Used instead of MONAI's ``default_normalizer``, which maps (min, max) to (1, 0): that flips the map and,
    by subtracting the minimum, changes the mass that lung attention measures.
    """
    maps = maps.float().clamp(min=0)
    peak = maps.flatten(1).amax(1).view(-1, *[1] * (maps.ndim - 1))
    return torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def lung_attention(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each map's mass inside its mask: ``sum(s * m) / sum(s)`` per image, NaN for an all-zero map.

    Args:
        saliency: (B, 1, H, W) non-negative maps.
        mask: (B, 1, H, W) lung masks (non-zero = lung), on the same grid.
    """
    s = saliency.float().clamp(min=0).flatten(1)
    m = (mask > 0).float().flatten(1)
    total = s.sum(1)
    inside = (s * m).sum(1)
    nan = torch.full_like(total, float("nan"))
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(s.dtype).tiny), nan)


def attention_and_masks(pred: Mapping[str, torch.Tensor], targets: Any = None) -> dict[str, torch.Tensor]:
    """Lung probability and mask from ``pred["seg"]``, and lung attention of ``pred["saliency"]``.

    The attention uses the ground-truth mask where ``targets`` has one (``has_mask`` = 1), else the predicted
    mask. Returns the keys it could compute among ``lung_prob``, ``lung_mask`` (B, 1, H, W),
    ``lung_attention`` (B,) and ``attention_gt`` (B,) bool.
    """
    out: dict[str, torch.Tensor] = {}
    seg = pred.get("seg")
    if seg is not None:
        seg = seg.float()
        out["lung_prob"] = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, 1)[:, 1:2]
        out["lung_mask"] = (out["lung_prob"] > 0.5).float()
    saliency = pred.get("saliency")
    if saliency is None:
        return out
    mask = out.get("lung_mask")
    gt = torch.zeros(saliency.shape[0], dtype=torch.bool, device=saliency.device)
    if isinstance(targets, Mapping) and "mask" in targets and "has_mask" in targets:
        gt = targets["has_mask"].reshape(-1).to(saliency.device) > 0
        true_mask = targets["mask"].to(saliency.device).float()
        mask = true_mask if mask is None else torch.where(gt.view(-1, 1, 1, 1), true_mask, mask)
    if mask is not None:
        out["lung_attention"] = lung_attention(saliency, mask)
        out["attention_gt"] = gt
    return out


def _class_logits(network: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Class logits and, for this bundle's networks, the encoder features (reused by the segmentation head)."""
    if hasattr(network, "encode") and hasattr(network, "classify"):
        features = network.encode(x)
        return network.classify(features), features
    out = network(x)
    if isinstance(out, dict):
        out = out["class"]
    return out, None


class BatchClassScoreHooks(ModelWithHooks):
    """MONAI's ``ModelWithHooks`` (the engine behind ``GradCAM`` / ``GradCAMpp``), fixed for batches and made cheap.

    Three differences from MONAI 1.6's own ``__call__``, which is written for one image:

    * the score is each image's own class logit (``gather``); MONAI's ``logits[:, class_idx]`` with one class
      per image builds a B x B matrix and mixes other images' classes into each gradient;
    * ``score`` is kept as (B, 1, 1, 1), so that GradCAM++'s ``score.exp() * grad`` broadcasts per image;
    * gradients are taken with ``torch.autograd.grad`` down to the target layer only, not back through the whole
      encoder into every parameter: the map needs nothing below that layer, and this keeps the cost of a map
      close to that of a forward pass.

    It also runs under ``torch.enable_grad()``, so it works inside an evaluator's ``no_grad`` block, and keeps
    the encoder features of the last call (``features``) so that the segmentation head can reuse them.
    """

    def __init__(self, nn_module: nn.Module, target_layer: str) -> None:
        if target_layer not in dict(nn_module.named_modules()):
            raise ValueError(f"saliency_layer {target_layer!r} is not a module of {type(nn_module).__name__}")
        super().__init__(nn_module, target_layer, register_forward=True, register_backward=False)
        self.target_layer = target_layer
        self.features: list[torch.Tensor] | None = None
        self.logits: torch.Tensor | None = None

    def class_score(self, logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return logits.gather(1, class_idx.view(-1, 1).to(logits.device)).squeeze(1)

    def __call__(self, x: torch.Tensor, class_idx: Any = None, retain_graph: bool = False, **kwargs: Any):
        self.activations.clear()
        with torch.enable_grad():
            # an input that requires grad guarantees a graph even when the weights are frozen
            x = x.detach().requires_grad_(True)
            logits, self.features = _class_logits(self.model, x)
            if self.target_layer not in self.activations:
                raise ValueError(f"saliency_layer {self.target_layer!r} is not on the path to the class logits")
            acti = self.activations[self.target_layer]
            if class_idx is None:
                class_idx = logits.argmax(1)
            class_idx = torch.as_tensor(class_idx, device=logits.device).long().expand(logits.shape[0])
            score = self.class_score(logits, class_idx)
            (grad,) = torch.autograd.grad(score.sum(), acti, retain_graph=retain_graph)
        self.class_idx = class_idx
        self.logits = logits.detach()
        # GradCAM++ weighs each image by exp(score), a positive per-image factor that normalize_maps cancels;
        # the clamp keeps large logits from overflowing to inf (inf * 0 = NaN in the weights).
        self.score = score.detach().float().clamp(max=50.0).view(-1, *[1] * (acti.ndim - 1))
        return self.logits, (acti.detach().float(),), (grad.detach().float(),)


class _ClassifierView(nn.Module):
    """Class logits of a multi-task network, for MONAI tools that need a tensor-returning module."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _class_logits(self.network, x)[0]


class SaliencyInferer(Inferer):
    """Inferer returning ``{"class", "seg", "saliency", "saliency_class"}`` for a batch.

    ``class`` (B, K) and ``seg`` (B, 2, H, W) are logits, ``saliency`` (B, 1, H, W) is in [0, 1] (1 = the most
    important pixel of that image) and ``saliency_class`` (B,) is the class each map explains.

    Works with ``MultiTaskNet`` and its tensor views (anything with ``encode`` / ``classify`` / ``segment``);
    ``seg`` is left out for a network without ``segment``. With ``method="none"`` it is a plain forward pass.

    Args:
        method: ``gradcampp`` (default), ``gradcam``, ``occlusion`` or ``none``.
        target_layer: module name for Grad-CAM; None picks ``default_target_layer`` for the backbone.
        class_idx: explain this class for every image (index, or name with ``class_names``); None = predicted.
        class_names: class names, to accept ``class_idx`` as a name.
        multi_label: sigmoid instead of softmax for occlusion probabilities.
        occlusion_mask_size: occluded patch size in pixels (None: 1/8 of the image side).
        occlusion_overlap: overlap of neighbouring patches, in [0, 1).
        occlusion_n_batch: occluded images per forward pass.
    """

    def __init__(
        self,
        method: str = "gradcampp",
        target_layer: str | None = None,
        class_idx: int | str | None = None,
        class_names: Sequence[str] | None = None,
        multi_label: bool = False,
        occlusion_mask_size: int | None = None,
        occlusion_overlap: float = 0.5,
        occlusion_n_batch: int = 16,
    ) -> None:
        super().__init__()
        method = (method or "none").lower()
        if method not in SALIENCY_METHODS:
            raise ValueError(f"saliency must be one of {SALIENCY_METHODS}, got {method!r}")
        if isinstance(class_idx, str):
            names = list(class_names or [])
            if class_idx not in names:
                raise ValueError(f"saliency_class {class_idx!r} is not one of the class names {names}")
            class_idx = names.index(class_idx)
        if class_idx is not None and class_names is not None and not 0 <= int(class_idx) < len(class_names):
            raise ValueError(f"saliency_class {class_idx} out of range [0, {len(class_names) - 1}]")
        self.method, self.target_layer, self.class_idx = method, target_layer, class_idx
        self.multi_label = as_bool(multi_label, "multi_label")
        self.occlusion_mask_size, self.occlusion_overlap = occlusion_mask_size, occlusion_overlap
        self.occlusion_n_batch = occlusion_n_batch
        self._cams: dict[int, tuple[nn.Module, Callable]] = {}

    def _cam(self, network: nn.Module) -> GradCAM:
        # hooks are registered once per network object, not on every batch
        cached = self._cams.get(id(network))
        if cached is None or cached[0] is not network:
            layer = self.target_layer or default_target_layer(network)
            hooks = BatchClassScoreHooks(network, layer)
            cam_type = GradCAMpp if self.method == "gradcampp" else GradCAM
            cam = cam_type(hooks, target_layers=layer, upsampler=default_upsampler, postprocessing=normalize_maps)
            cached = self._cams[id(network)] = (network, cam)
        return cached[1]

    def _occlusion(self, network: nn.Module, x: torch.Tensor, logits: torch.Tensor, class_idx: torch.Tensor):
        view = _ClassifierView(network)

        # MONAI's activate=True picks sigmoid vs softmax from the *input* channels (1 for CXRs): pass it explicitly
        def activate(logits: torch.Tensor) -> torch.Tensor:
            return class_probabilities(logits, self.multi_label)

        mask_size = self.occlusion_mask_size or max(2, min(x.shape[2:]) // 8)
        occ = OcclusionSensitivity(
            view,
            mask_size=mask_size,
            n_batch=self.occlusion_n_batch,
            verbose=False,
            overlap=self.occlusion_overlap,
            activate=activate,
        )
        prob = activate(logits)
        maps = []
        for i in range(x.shape[0]):  # OcclusionSensitivity takes one image at a time
            with warnings.catch_warnings():  # MONAI's occlusion code trips a torch indexing deprecation warning
                warnings.simplefilter("ignore", UserWarning)
                occ_map, _ = occ(x[i : i + 1])
            occ_map = occ_map.as_tensor() if isinstance(occ_map, MetaTensor) else occ_map
            k = int(class_idx[i])
            # importance = how much the class probability drops when the region is hidden
            maps.append((prob[i, k] - occ_map[0, k].float()).clamp(min=0)[None, None])
        return normalize_maps(torch.cat(maps))

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Logits, lung segmentation and saliency for a batch ``inputs`` (B, C, H, W)."""
        out: dict[str, torch.Tensor] = {}
        if self.method in ("gradcam", "gradcampp"):
            cam = self._cam(network)
            out["saliency"] = cam(inputs, class_idx=self.class_idx)
            hooks: BatchClassScoreHooks = cam.nn_module  # type: ignore[assignment]
            logits, features = hooks.logits, hooks.features
            out["saliency_class"] = hooks.class_idx
        else:
            with torch.no_grad():
                logits, features = _class_logits(network, inputs)
            if self.method == "occlusion":
                idx = logits.argmax(1)
                if self.class_idx is not None:
                    idx = torch.full_like(idx, int(self.class_idx))
                with torch.no_grad():
                    out["saliency"] = self._occlusion(network, inputs, logits, idx)
                out["saliency_class"] = idx
        out["class"] = logits
        if hasattr(network, "segment"):
            with torch.no_grad():
                if features is None:
                    features = network.encode(inputs)
                out["seg"] = network.segment([f.detach() for f in features])
        return out
