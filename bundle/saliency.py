"""Saliency maps for the classification head, computed inside MONAI engines.

The maps come from MONAI's ``GradCAM`` / ``GradCAMpp`` (gradient-based) and ``OcclusionSensitivity``
(perturbation-based), and for the ViT backbones from their attention (``bundle.relevance``: attention rollout and
the gradient-weighted attention relevance). ``SaliencyInferer`` is a MONAI ``Inferer``: a ``SupervisedEvaluator`` calls it under
``torch.no_grad()`` and it re-enables gradients only where a map needs them, so class logits, the lung
segmentation and the map come out of one call, on a batch, on CPU or CUDA.

How much of a map falls inside the lungs is scored by ``bundle.evaluation.attention``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
from torch import nn

from .networks.multitask import RULES as NETWORK_RULES
from .networks.multitask import build_encoder, class_probabilities
from .networks.vit import VIT_BACKBONES, is_vit
from .relevance import RELEVANCE_METHODS, AttentionRecorder, gradient_relevance, patch_relevance, rollout
from .values import Rule, as_bool, choice, class_names, described, integer, is_int, number, optional, show, text

__all__ = [
    "SALIENCY_METHODS",
    "DEFAULT_STAGES",
    "encoder_stages",
    "default_target_layer",
    "parse_target_layers",
    "combine_maps",
    "normalize_maps",
    "BatchClassScoreHooks",
    "SaliencyInferer",
]

SALIENCY_METHODS = ("gradcampp", "gradcam", "occlusion") + RELEVANCE_METHODS + ("none",)
GRADCAM_METHODS = ("gradcampp", "gradcam")


# Stages (shallow to deep, see ``encoder_stages``) explained when saliency_layer is null: chosen by the lung
# attention, resolution, cost and cascading-randomisation check of docs/saliency.md.
DEFAULT_STAGES = (2, 3)
# How a saliency_layer joins module names: "+" averages the layers' normalised maps, "*" multiplies them.
LAYER_JOINS = {"+": "mean", "*": "product"}


def encoder_stages(network: nn.Module) -> list[str]:
    """Module names of the encoder's last four feature stages, shallow to deep (strides 4, 8, 16, 32).

    ``encoder.layer1`` ... ``encoder.layer4`` for MONAI's ResNet encoders; for EfficientNet encoders the MBConv
    stacks whose outputs are the encoder's feature maps (``extract_stacks``), e.g. ``encoder._blocks.1, .2, .4,
    .6`` for every efficientnet-b*. The last one produces the feature map the classifier pools.
    """
    encoder = getattr(network, "encoder", None)
    if encoder is None:
        raise ValueError(f"{type(network).__name__} has no 'encoder'; set saliency_layer to a module name")
    if callable(getattr(encoder, "saliency_stages", None)):  # the ViTs: patch-token maps (bundle.networks.vit)
        return [f"encoder.{name}" for name in encoder.saliency_stages()]
    if all(hasattr(encoder, f"layer{i}") for i in range(1, 5)):
        return [f"encoder.layer{i}" for i in range(1, 5)]
    blocks, stacks = getattr(encoder, "_blocks", None), list(getattr(encoder, "extract_stacks", None) or [])
    if isinstance(blocks, nn.Sequential) and len(stacks) >= 4 and all(0 < s <= len(blocks) for s in stacks[-4:]):
        return [f"encoder._blocks.{s - 1}" for s in stacks[-4:]]
    raise ValueError(f"no default saliency layer for encoder {type(encoder).__name__}; set saliency_layer")


def default_target_layer(network: nn.Module) -> str:
    """The layer(s) Grad-CAM explains when saliency_layer is null: ``encoder.layer3+encoder.layer4`` for ResNets.

    The mean of the maps of the two deepest encoder stages (``encoder_stages``; ``encoder._blocks.4+
    encoder._blocks.6`` for EfficientNets): 14x14 cells at 224 px instead of the deepest stage's 7x7, and a map that
    passes the cascading-randomisation check (docs/saliency.md has the measurements behind this choice). For a
    ViT: the last block's patch tokens on the 14x14 patch grid (``encoder.patch_grid``; ``encoder.grids.11``, the
    last block's input, with ``vit_pool`` token).
    """
    stages = encoder_stages(network)
    if callable(getattr(network.encoder, "saliency_stages", None)):
        # a ViT's patch-token maps all lie on one 1/16 grid: deeper stages add no resolution, so the last one
        # (the grid whose gradients carry the class) is explained alone
        return stages[-1]
    return "+".join(stages[i] for i in DEFAULT_STAGES)


def parse_target_layers(target_layer: str | Sequence[str]) -> tuple[tuple[str, ...], str]:
    """Module names and how to combine their maps, from a saliency_layer id.

    ``"encoder.layer4"`` is one layer; ``"encoder.layer3+encoder.layer4"`` (or a list of names) averages the
    layers' normalised maps; ``"encoder.layer3*encoder.layer4"`` multiplies them.

    Returns:
        (names, mode) with mode ``"mean"`` or ``"product"``.
    """
    if isinstance(target_layer, str):
        joins = [j for j in LAYER_JOINS if j in target_layer]
        if len(joins) > 1:
            raise ValueError(f"saliency_layer {target_layer!r} joins layers with both '+' and '*'; use one of them")
        mode = LAYER_JOINS[joins[0]] if joins else "mean"
        names = [n.strip() for n in target_layer.split(joins[0])] if joins else [target_layer.strip()]
    else:
        mode, names = "mean", [str(n).strip() for n in target_layer]
    if not names or not all(names):
        raise ValueError(f"saliency_layer {target_layer!r} has an empty layer name")
    if len(set(names)) != len(names):
        raise ValueError(f"saliency_layer {target_layer!r} names a layer twice")
    return tuple(names), mode


def combine_maps(maps: Sequence[torch.Tensor], mode: str = "mean") -> torch.Tensor:
    """One map from several layers' maps, each (B, 1, H, W) in [0, 1] on the input grid; result in [0, 1].

    ``mean``: per-pixel mean, then ``normalize_maps``; a region either layer marks stays visible, and the fine
    layer adds detail inside the coarse one's blobs. ``product``: per-pixel product, then ``normalize_maps``; only
    what every layer marks survives (sharper, but one layer's empty map empties the result).
    """
    if mode not in LAYER_JOINS.values():
        raise ValueError(f"combine mode must be one of {sorted(LAYER_JOINS.values())}, got {mode!r}")
    stacked = torch.stack([m.float() for m in maps])
    return normalize_maps(stacked.mean(0) if mode == "mean" else stacked.prod(0))


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each non-negative map of a batch (B, 1, H, W) to [0, 1] by its maximum; an all-zero map stays zero.

    Used instead of MONAI's ``default_normalizer``, which maps (min, max) to (1, 0): that flips the map and,
    by subtracting the minimum, changes the mass that lung attention measures.
    """
    maps = maps.float().clamp(min=0)
    peak = maps.flatten(1).amax(1).view(-1, *[1] * (maps.ndim - 1))
    return torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def _class_logits(network: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """(B, K) class logits and, for this bundle's networks, the encoder features of the full image ``x``.

    The features are the ones the segmentation head reads, so the lungs are always segmented from the full image.
    With ``lungs_only`` the logits come from a second encoder pass on the lung-masked image (``class_logits``):
    the encoder's last call is then the class path, which is what Grad-CAM's hooks record and explain.
    """
    if hasattr(network, "encode") and hasattr(network, "class_logits"):
        features = network.encode(x)
        return network.class_logits(x, features), features
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
    * gradients are taken with ``torch.autograd.grad`` down to the target layer(s) only, not back through the whole
      encoder into every parameter: the map needs nothing below the shallowest requested layer, and this keeps
      the cost of a map close to that of a forward pass.

    Several layers (``"a+b"`` or a list, see ``parse_target_layers``) are recorded in the same forward pass and
    differentiated in one ``autograd.grad`` call. Within ``recorded(x)`` every call returns that one pass's
    outputs, so MONAI's ``compute_map(..., layer_idx=i)`` turns each layer into its map without running again.

    It also runs under ``torch.enable_grad()``, so it works inside an evaluator's ``no_grad`` block, and keeps
    the encoder features of the last call (``features``) so that the segmentation head can reuse them.
    """

    def __init__(self, nn_module: nn.Module, target_layer: str | Sequence[str]) -> None:
        layers, _ = parse_target_layers(target_layer)
        modules = dict(nn_module.named_modules())
        for name in layers:
            if name not in modules:
                raise ValueError(f"saliency_layer {name!r} is not a module of {type(nn_module).__name__}")
        super().__init__(nn_module, layers, register_forward=True, register_backward=False)
        self.target_layer = "+".join(layers) if not isinstance(target_layer, str) else target_layer
        self.features: list[torch.Tensor] | None = None
        self.logits: torch.Tensor | None = None
        self._recorded: tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None

    def class_score(self, logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return logits.gather(1, class_idx.view(-1, 1).to(logits.device)).squeeze(1)

    @contextmanager
    def recorded(self, x: torch.Tensor, class_idx: Any = None) -> Iterator[None]:
        """Run the network once on ``x`` (B, C, H, W); inside the block every call returns that run's outputs."""
        self._recorded = None
        self._recorded = self(x, class_idx)
        try:
            yield
        finally:
            self._recorded = None

    def __call__(self, x: torch.Tensor, class_idx: Any = None, retain_graph: bool = False, **kwargs: Any):
        if self._recorded is not None:
            return self._recorded
        self.activations.clear()
        with torch.enable_grad():
            # an input that requires grad guarantees a graph even when the weights are frozen
            x = x.detach().requires_grad_(True)
            logits, self.features = _class_logits(self.model, x)
            for name in self.target_layers:
                if name not in self.activations:
                    raise ValueError(f"saliency_layer {name!r} is not on the path to the class logits")
            actis = [self.activations[name] for name in self.target_layers]
            if class_idx is None:
                class_idx = logits.argmax(1)
            class_idx = torch.as_tensor(class_idx, device=logits.device).long().expand(logits.shape[0])
            score = self.class_score(logits, class_idx)
            grads = torch.autograd.grad(score.sum(), actis, retain_graph=retain_graph, allow_unused=True)
        for name, grad in zip(self.target_layers, grads):
            if grad is None:  # recorded, but the class score does not depend on it
                raise ValueError(f"saliency_layer {name!r} is not on the path to the class logits")
        self.class_idx = class_idx
        self.logits = logits.detach()
        # GradCAM++ weighs each image by exp(score), a positive per-image factor that normalize_maps cancels;
        # the clamp keeps large logits from overflowing to inf (inf * 0 = NaN in the weights).
        self.score = score.detach().float().clamp(max=50.0).view(-1, *[1] * (actis[0].ndim - 1))
        return self.logits, tuple(a.detach().float() for a in actis), tuple(g.detach().float() for g in grads)


class _ClassifierView(nn.Module):
    """Class logits of a multi-task network, for MONAI tools that need a tensor-returning module.

    The logits are ``_class_logits``'s, so with ``lungs_only`` an occluded patch acts through the whole class path
    (it may also change the predicted lung mask), as it would in the network's own forward.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        # a new module starts in training mode: MONAI's eval_mode (OcclusionSensitivity) would then "restore" the
        # wrapped network to training mode afterwards, and the segmentation that follows would use batch statistics
        self.training = network.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _class_logits(self.network, x)[0]


class SaliencyInferer(Inferer):
    """Inferer returning ``{"class", "seg", "saliency", "saliency_class"}`` for a batch.

    ``class`` (B, K) and ``seg`` (B, 2, H, W) are logits, ``saliency`` (B, 1, H, W) is in [0, 1] (1 = the most
    important pixel of that image) and ``saliency_class`` (B,) is the class each map explains.

    Works with ``MultiTaskNet`` and its tensor views (anything with ``encode`` / ``classify`` / ``segment``);
    ``seg`` is left out for a network without ``segment``. With ``method="none"`` it is a plain forward pass.

    Args:
        method: ``gradcampp`` (default), ``gradcam``, ``occlusion``, ``rollout`` or ``attention_gradient`` (ViT
            backbones, ``bundle.relevance``) or ``none``.
        target_layer: module name(s) for Grad-CAM: one name, names joined by ``+`` (mean of their maps) or ``*``
            (product), or a list (see ``parse_target_layers``); None picks ``default_target_layer``. The
            relevance methods read every block's attention and take no layer.
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
        target_layer: str | Sequence[str] | None = None,
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
        if target_layer is not None:
            parse_target_layers(target_layer)  # a malformed id fails here, before any batch
        self.method, self.target_layer, self.class_idx = method, target_layer, class_idx
        self.multi_label = as_bool(multi_label, "multi_label")
        self.occlusion_mask_size, self.occlusion_overlap = occlusion_mask_size, occlusion_overlap
        self.occlusion_n_batch = occlusion_n_batch
        self._cams: dict[int, tuple[nn.Module, GradCAM, str]] = {}
        self.cells: int | None = None  # cells per side of the last relevance map's patch grid

    def _cam(self, network: nn.Module) -> tuple[GradCAM, str]:
        # hooks are registered once per network object, not on every batch
        cached = self._cams.get(id(network))
        if cached is None or cached[0] is not network:
            layers, mode = parse_target_layers(self.target_layer or default_target_layer(network))
            hooks = BatchClassScoreHooks(network, layers)
            cam_type = GradCAMpp if self.method == "gradcampp" else GradCAM
            cam = cam_type(hooks, target_layers=layers, upsampler=default_upsampler, postprocessing=normalize_maps)
            cached = self._cams[id(network)] = (network, cam, mode)
        return cached[1], cached[2]

    def hooks(self, network: nn.Module) -> BatchClassScoreHooks:
        """The Grad-CAM hooks on ``network`` (``target_layer``: the explained layer(s); ``activations``: the last
        batch's recorded feature maps, whose grid is the map's resolution)."""
        return self._cam(network)[0].nn_module  # type: ignore[return-value]

    def _gradcam(self, network: nn.Module, inputs: torch.Tensor, class_idx: Any) -> torch.Tensor:
        """(B, 1, H, W) map in [0, 1]: each layer's MONAI map from one recorded pass, upsampled, normalised, combined."""
        cam, mode = self._cam(network)
        hooks: BatchClassScoreHooks = cam.nn_module  # type: ignore[assignment]
        with hooks.recorded(inputs, class_idx):
            maps = [cam(inputs, layer_idx=i) for i in range(len(hooks.target_layers))]
        return maps[0] if len(maps) == 1 else combine_maps(maps, mode)

    def explained_layer(self, network: nn.Module) -> str:
        """What the maps explain: Grad-CAM's layer id, the ViT's attention blocks, or the input (occlusion)."""
        if self.method in GRADCAM_METHODS:
            return self.hooks(network).target_layer
        return "encoder.vit.blocks (attention)" if self.method in RELEVANCE_METHODS else "input"

    def _relevance(self, network: nn.Module, inputs: torch.Tensor, class_idx: Any):
        """(B, 1, H, W) map in [0, 1] from the ViT's attention (``bundle.relevance``), the logits, the encoder
        features of the full image and the explained classes, from one forward pass."""
        gradient = self.method == "attention_gradient"
        with AttentionRecorder(network) as recorder, torch.set_grad_enabled(gradient):
            # an input that requires grad guarantees a graph even when the weights are frozen
            x = inputs.detach().requires_grad_(gradient)
            logits, features = _class_logits(network, x)
            attentions = recorder.last_pass()
            idx = logits.argmax(1) if class_idx is None else class_idx
            idx = torch.as_tensor(idx, device=logits.device).long().expand(logits.shape[0]).clone()
            if gradient:
                # each image's own class score: the sum's gradient splits into per-image gradients
                score = logits.gather(1, idx.view(-1, 1)).sum()
                relevance = gradient_relevance(attentions, torch.autograd.grad(score, attentions))
            else:
                relevance = rollout(attentions)
        encoder = network.encoder
        height, width = inputs.shape[-2] // encoder.patch_size, inputs.shape[-1] // encoder.patch_size
        grid = patch_relevance(relevance, encoder.prefix, height, width, without_self=gradient)
        self.cells = min(height, width)
        maps = normalize_maps(default_upsampler(inputs.shape[2:])(grid))
        return maps, logits.detach(), [f.detach() for f in features] if features is not None else None, idx

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

    def __call__(
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        *args: Any,
        saliency_class: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Logits, lung segmentation and saliency for a batch ``inputs`` (B, C, H, W).

        ``saliency_class`` (B,) explains these classes, one per image, instead of ``class_idx`` or the prediction
        (the sanity check keeps the trained model's classes while it randomises the weights).
        """
        out: dict[str, torch.Tensor] = {}
        class_idx = self.class_idx if saliency_class is None else saliency_class
        if self.method in GRADCAM_METHODS:
            out["saliency"] = self._gradcam(network, inputs, class_idx)
            hooks = self.hooks(network)
            logits, features = hooks.logits, hooks.features
            out["saliency_class"] = hooks.class_idx
        elif self.method in RELEVANCE_METHODS:
            out["saliency"], logits, features, out["saliency_class"] = self._relevance(network, inputs, class_idx)
        else:
            with torch.no_grad():
                logits, features = _class_logits(network, inputs)
            if self.method == "occlusion":
                idx = logits.argmax(1)
                if class_idx is not None:
                    idx = torch.as_tensor(class_idx, device=idx.device).long().expand_as(idx).clone()
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


# the settings of the maps (bundle.settings gathers every component's table); saliency_class is an index or a
# class name, checked against class_names by saliency_class_check
RULES: dict[str, Rule | None] = {
    "saliency": described(
        choice(SALIENCY_METHODS), "saliency method of evaluation and inference (rollout, attention_gradient: ViTs)"
    ),
    "saliency_layer": described(
        optional(text), "module(s) Grad-CAM explains (``a+b``: the mean of their maps); null: the encoder's default"
    ),
    "saliency_class": described(
        None,
        "class explained for every image; null: the predicted class",
        "null, a class name of `class_names` or an index into it",
    ),
    "occlusion_mask_size": described(
        optional(integer(1)), "occlusion patch side in pixels; null: an eighth of the image side"
    ),
    "occlusion_overlap": described(number(0, 1, hi_open=True), "overlap of neighbouring occlusion patches"),
}


def saliency_class_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """``saliency_class`` names a class of ``class_names`` (by name or index), or is null."""
    cls, names = s.get("saliency_class"), s.get("class_names")
    names_ok = "class_names" in s and class_names(names) is None
    if cls is None:
        return []
    if isinstance(cls, str):
        ok = not names_ok or cls in names
        return [] if ok else [f"saliency_class: {show(cls)} is not one of the class names {list(names)}"]
    if is_int(cls):
        ok = not names_ok or 0 <= cls < len(names)
        return [] if ok else [f"saliency_class: {cls} is not a class index in [0, {len(names) - 1}]"]
    return [f"saliency_class: {show(cls)} must be a class name, a class index, or null"]


def saliency_layer_problem(layer: Any, backbone: str, vit_pool: str = "mean") -> str | None:
    """What is wrong with ``saliency_layer`` for this encoder (one layer, or several joined by ``+`` / ``*``:
    the classifier reads the encoder), or None."""
    try:
        names, _ = parse_target_layers(layer)
    except ValueError as e:
        return str(e).replace(f"saliency_layer {layer!r} ", "")
    encoder = build_encoder(backbone, vit_pool=vit_pool)  # a second or less, and only when a layer is named
    modules = {f"encoder.{n}" for n, _ in encoder.named_modules() if n}
    unknown = [n for n in names if n not in modules]
    if not unknown:
        return None
    default = default_target_layer(SimpleNamespace(encoder=encoder))
    which = "is not a module" if len(names) == 1 else f"names {', '.join(unknown)}, not modules"
    return f"{which} of the {backbone} encoder (the default, when saliency_layer is null, is {default})"


def saliency_layer_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """A named ``saliency_layer`` is a layer of the configured encoder."""
    layer, backbone = s.get("saliency_layer"), s.get("backbone")
    if not (isinstance(layer, str) and layer.strip()) or NETWORK_RULES["backbone"](backbone) is not None:
        return []
    pool = s.get("vit_pool", "mean")
    problem = saliency_layer_problem(layer, backbone, pool if NETWORK_RULES["vit_pool"](pool) is None else "mean")
    return [f"saliency_layer: {show(layer)} {problem}"] if problem else []


def saliency_method_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """The relevance methods (``rollout``, ``attention_gradient``) go with a ViT backbone and no saliency_layer."""
    method, backbone, layer = s.get("saliency"), s.get("backbone"), s.get("saliency_layer")
    if method not in RELEVANCE_METHODS:
        return []
    if NETWORK_RULES["backbone"](backbone) is None and not is_vit(backbone):
        return [
            f"saliency: {method} explains a transformer's attention and backbone {backbone} has none: use "
            f"gradcampp, gradcam or occlusion, or a ViT backbone ({', '.join(VIT_BACKBONES)})"
        ]
    if isinstance(layer, str) and layer.strip():
        return [f"saliency_layer: {show(layer)} is for gradcampp and gradcam; {method} reads every block: set it null"]
    return []


def occlusion_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """The occlusion patch fits in the image."""
    mask, size = s.get("occlusion_mask_size"), s.get("image_size")
    if is_int(mask) and is_int(size) and mask > size:
        return [f"occlusion_mask_size: {mask} is larger than image_size {size}"]
    return []


CHECKS = (saliency_class_check, saliency_layer_check, saliency_method_check, occlusion_check)
