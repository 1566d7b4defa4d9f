"""Published ViT encoders onto the bundle's ViT: timm ViT-S/16 and ViT-B/16, DINOv2 (its ``.pth`` and the
``transformers`` layout that RAD-DINO is published in) mapped onto ``MultiTaskNet(backbone=vit_s16|vit_b16).encoder``.

Layouts (``detect_layout`` tells them apart by their keys):

* ``timm_vit``: ``cls_token``, ``pos_embed`` (1, 1 + 14 * 14, D), ``patch_embed.proj`` (16 x 16 kernel),
  ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``; ``head`` and ``fc_norm`` are the
  classifier's and dropped.
* ``dinov2``: the same block names plus LayerScale (``blocks.N.ls1.gamma``, ``blocks.N.ls2.gamma``), a 14 x 14
  kernel and a 37 x 37 position grid (518 px); ``mask_token`` (masked pretraining only) is dropped. The
  ``transformers`` names (``embeddings.*``, ``encoder.layer.N.*``, separate query / key / value) are renamed to
  these first.

What the conversion does, and what is exact (same features as the original, within float32 rounding) or not:

* **Exact.** Names; q, k and v concatenated in MONAI's qkv order (``(qkv heads dim)``, as timm's); LayerScale
  folded into the linear layer before it (``attn.proj`` and ``mlp.fc2``, weight and bias times gamma); the class
  token's position (``pos_embed[:, 0]``) added to the class token (the bundle adds positions to the patch tokens
  only); the published input normalisation (mean / std per RGB channel, ImageNet's unless given) and the RGB ->
  grey fold: a grey image in [0, 1] copied to the three channels and normalised is a linear map of the grey
  image, so it is folded into the patch embedding's weight and bias. LayerNorm eps 1e-6 and exact GELU, as the
  bundle's ViT has them. A converted network with a class token needs ``vit_pool token`` (the patch tokens attend
  to it); the recipe says so and fine-tuning with another pooling stops.
* **Exact for patch-resized input (DINOv2's 14 px patches).** The bundle's patches are 16 px. The kernel is
  resampled 14 -> 16 with FlexiViT's pseudo-inverse resize (Beyer et al., CVPR 2023): with ``B`` the bilinear
  resize of a 14 x 14 patch to 16 x 16 (a 256 x 196 matrix of full column rank), the new kernel is
  ``pinv(B)^T w``, so ``<w16, B x> = <w14, x>`` for every patch ``x``: an image whose 14 px patches are each
  resized to 16 px gives the original's tokens. An image resized as a whole is not patch-wise linear in the same
  way: its features move (the tests measure by how much).
* **Approximate.** The position grid (37 x 37 for DINOv2, 14 x 14 for timm at 224 px) is resized bicubically to
  the bundle's 14 x 14 table (size-based, ``align_corners=False``, as ``transformers``' Dinov2 and the bundle's
  own ``position_table`` do; DINOv2's own code offsets the scale factor by 0.1/37, a slightly different sampling).
  A 14 x 14 grid (timm at 224 px) is copied exactly.

Refused with one message naming the key: register tokens (``register_tokens``, ``reg_token``; the bundle's ViT
has one class token and nothing else before the patches), EVA-X / EVA-02 (SwiGLU MLPs ``mlp.w1/w2/w3`` and rotary
position embeddings: MONAI's ``TransformerBlock`` has a two-layer GELU MLP and learned absolute positions only), a
width or depth no bundle backbone has, any key without a counterpart, any missing key, any shape that differs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .multitask import MultiTaskNet
from .vit import PATCH_SIZE, VIT_BACKBONES

__all__ = [
    "VIT_LAYOUTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "detect_layout",
    "convert_published_vit",
    "fold_patch_embedding",
    "pi_resize_kernel",
    "resize_position_grid",
    "format_vit_report",
]

VIT_LAYOUTS = ("timm_vit", "dinov2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVA_MARKERS = ("mlp.w1.", "mlp.w2.", "mlp.w3.", "mlp.w12.", "rope.", "freqs_cos", "inner_attn_ln", "ffn_ln")
REGISTER_KEYS = ("register_tokens", "reg_token")
DROPPED = {
    "mask_token": "learned token of masked pretraining: not used on whole images",
    "head.": "ImageNet classifier: dropped",
    "fc_norm.": "the classifier's normalisation: dropped",
}
# transformers' Dinov2Model names -> the original DINOv2 names (the common layout the mapping reads)
HF_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale1\.lambda1$", r"blocks.\1.ls1.gamma"),
    (r"^encoder\.layer\.(\d+)\.layer_scale2\.lambda1$", r"blocks.\1.ls2.gamma"),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"^layernorm\.", "norm."),
]
# a block's parameters: source name -> (bundle name, LayerScale folded into it)
BLOCK_MAP = {
    "norm1": ("norm1", None),
    "attn.qkv": ("attn.qkv", None),
    "attn.proj": ("attn.out_proj", "ls1.gamma"),
    "norm2": ("norm2", None),
    "mlp.fc1": ("mlp.linear1", None),
    "mlp.fc2": ("mlp.linear2", "ls2.gamma"),
}


def detect_layout(state: Mapping[str, Any]) -> str | None:
    """The layout of a state_dict from its keys: ``torchvision_resnet``, ``timm_vit``, ``dinov2``, ``eva`` or
    None (unknown). DINOv2 is told from timm by LayerScale, a patch kernel other than 16 or transformers' names."""
    keys = list(state)
    if any(m in k for k in keys for m in EVA_MARKERS):
        return "eva"
    if "embeddings.patch_embeddings.projection.weight" in state:
        return "dinov2"
    if "patch_embed.proj.weight" in state:
        kernel = tuple(state["patch_embed.proj.weight"].shape[-2:])
        if any(".ls1.gamma" in k for k in keys) or kernel != (PATCH_SIZE, PATCH_SIZE):
            return "dinov2"
        return "timm_vit"
    if any(k.startswith(("conv1.", "layer1.")) for k in keys):
        return "torchvision_resnet"
    return None


def _renamed(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Dinov2 names -> DINOv2's; its separate query / key / value concatenated into ``attn.qkv``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, repl in HF_RENAMES:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        out[key] = value
    parts = {}
    for key in list(out):
        m = re.match(r"^(blocks\.\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$", key)
        if m:
            parts[(m.group(1), m.group(3), m.group(2))] = out.pop(key)
    for block, kind in sorted({(b, k) for b, k, _ in parts}):
        missing = [p for p in ("query", "key", "value") if (block, kind, p) not in parts]
        if missing:
            layer = block.replace("blocks.", "encoder.layer.")
            raise ValueError(f"{layer}.attention.attention.{missing[0]}.{kind} is missing (q, k and v come together)")
        # MONAI's qkv rows are (qkv, heads, dim), timm's and DINOv2's order: q rows, then k, then v
        out[f"{block}.attn.qkv.{kind}"] = torch.cat([parts[(block, kind, p)] for p in ("query", "key", "value")])
    return out


def _refuse_foreign(state: Mapping[str, Any]) -> None:
    """Stop on layouts the bundle's ViT cannot carry: EVA-X / EVA-02 and register tokens."""
    eva = [k for k in state if any(m in k for m in EVA_MARKERS)]
    if eva:
        raise ValueError(
            f"{eva[0]}: an EVA-X / EVA-02 layout (SwiGLU MLPs mlp.w1/w2/w3 and rotary position embeddings); MONAI's "
            "TransformerBlock has a two-layer GELU MLP and learned absolute positions only, so these weights "
            "cannot be carried without changing the network"
        )
    registers = [k for k in state if k.split(".")[-1] in REGISTER_KEYS or k.startswith(REGISTER_KEYS)]
    if registers:
        raise ValueError(
            f"{registers[0]}: register tokens (DINOv2 with registers); the bundle's ViT has one class token and "
            "no registers, so the patch tokens would attend to other tokens than in training. Use the encoder "
            "without registers"
        )


def _backbone_for(state: Mapping[str, torch.Tensor], backbone: str | None) -> str:
    """The bundle backbone of the source's width and depth (``backbone`` when given and matching)."""
    if "patch_embed.proj.weight" not in state:
        raise ValueError("patch_embed.proj.weight (the patch embedding) is missing: not a ViT state_dict?")
    width = state["patch_embed.proj.weight"].shape[0]
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.", k))), default=-1)
    fits = [b for b, s in VIT_BACKBONES.items() if s["hidden_size"] == width and s["num_layers"] == depth]
    if backbone is None:
        if not fits:
            shapes = ", ".join(
                f"{b} {s['hidden_size']} wide, {s['num_layers']} blocks" for b, s in VIT_BACKBONES.items()
            )
            raise ValueError(f"patch_embed.proj.weight: {width} wide, {depth} blocks; no bundle ViT has it ({shapes})")
        return fits[0]
    if backbone not in VIT_BACKBONES:
        raise ValueError(f"--backbone {backbone} is not a ViT backbone; choose one of {sorted(VIT_BACKBONES)}")
    if backbone not in fits:
        shape = VIT_BACKBONES[backbone]
        raise ValueError(
            f"patch_embed.proj.weight: {width} wide, {depth} blocks; {backbone} is {shape['hidden_size']} wide with "
            f"{shape['num_layers']} blocks" + (f" (the file fits {fits[0]})" if fits else "")
        )
    return backbone


def pi_resize_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """FlexiViT's pseudo-inverse resize of a patch-embedding kernel (D, C, p, p) to (D, C, size, size).

    With ``B`` the bilinear resize (``align_corners=False``) of a p x p patch to size x size, the result is
    ``pinv(B)^T w``: for up-sampling (size >= p, ``B`` of full column rank) ``<w', B x> = <w, x>`` exactly.
    """
    old = weight.shape[-1]
    if old == size:
        return weight.clone()
    basis = torch.eye(old * old, dtype=torch.float64).reshape(old * old, 1, old, old)
    resized = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    resize = resized.reshape(old * old, size * size).T  # (size^2, old^2): column j is basis patch j resized
    flat = weight.double().reshape(-1, old * old)
    return (flat @ torch.linalg.pinv(resize)).reshape(*weight.shape[:-2], size, size).to(weight.dtype)


def resize_position_grid(table: torch.Tensor, side: int) -> torch.Tensor:
    """(1, g * g, D) patch positions on a g x g grid -> (1, side * side, D), bicubic, size-based."""
    grid = math.isqrt(table.shape[1])
    if grid * grid != table.shape[1]:
        raise ValueError(f"pos_embed: {table.shape[1]} patch positions are not a square grid")
    if grid == side:
        return table.clone()
    maps = table.reshape(1, grid, grid, -1).permute(0, 3, 1, 2).double()
    maps = F.interpolate(maps, size=(side, side), mode="bicubic", align_corners=False, antialias=False)
    return maps.flatten(2).transpose(1, 2).to(table.dtype)


def fold_patch_embedding(
    weight: torch.Tensor, bias: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, C, p, p) RGB kernel and (D,) bias that read ``(x - mean) / std`` -> a 1-channel kernel and bias that
    read the grey image ``x`` in [0, 1] (copied to every channel before the normalisation) with the same result."""
    channels = weight.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"--mean and --std need {channels} values (one per input channel), got {len(mean)}, {len(std)}"
        )
    m = torch.tensor(mean, dtype=torch.float64).reshape(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).reshape(1, -1, 1, 1)
    w = weight.double()
    folded = (w / s).sum(dim=1, keepdim=True)
    shift = (w * m / s).sum(dim=(1, 2, 3))
    return folded.to(weight.dtype), (bias.double() - shift).to(bias.dtype)


class _Source:
    """The source state_dict, read key by key: every key taken is remembered, a missing one names itself."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state, self.used = state, set()

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise ValueError(f"{key} is missing (every block and embedding of the encoder must be in the file)")
        self.used.add(key)
        return self.state[key].detach().float()


def _map_blocks(source: _Source, depth: int) -> tuple[dict[str, torch.Tensor], int]:
    """``blocks.N.*`` -> ``vit.blocks.N.*`` with LayerScale folded; returns the tensors and the gammas folded."""
    out: dict[str, torch.Tensor] = {}
    scales = 0
    for n in range(depth):
        for src, (dst, scale_key) in BLOCK_MAP.items():
            gamma = None
            if scale_key and f"blocks.{n}.{scale_key}" in source:
                gamma = source.take(f"blocks.{n}.{scale_key}")
                scales += 1
            for kind in ("weight", "bias"):
                value = source.take(f"blocks.{n}.{src}.{kind}")
                if gamma is not None:
                    if gamma.shape[0] != value.shape[0]:
                        raise ValueError(
                            f"blocks.{n}.{scale_key}: {tuple(gamma.shape)} does not scale {src}.{kind} "
                            f"{tuple(value.shape)}"
                        )
                    # x + gamma * (W h + b) = x + (gamma W) h + gamma b: exact
                    value = value * (gamma[:, None] if kind == "weight" else gamma)
                out[f"vit.blocks.{n}.{dst}.{kind}"] = value
    for kind in ("weight", "bias"):
        out[f"vit.norm.{kind}"] = source.take(f"norm.{kind}")
    return out, scales


def _map_embeddings(
    source: _Source, native_grid: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Patch embedding (normalisation and channels folded, kernel resized), positions, class token.

    Returns the tensors, what was folded exactly and what is approximate.
    """
    out: dict[str, torch.Tensor] = {}
    exact, approximate = [], []
    weight, bias = source.take("patch_embed.proj.weight"), source.take("patch_embed.proj.bias")
    channels = weight.shape[1]
    mean = tuple(mean) if mean is not None else (IMAGENET_MEAN if channels == 3 else (0.0,) * channels)
    std = tuple(std) if std is not None else (IMAGENET_STD if channels == 3 else (1.0,) * channels)
    weight, bias = fold_patch_embedding(weight, bias, mean, std)
    exact.append(f"input normalisation (mean {list(mean)}, std {list(std)}) and {channels} -> 1 channels")
    kernel = weight.shape[-1]
    if kernel != PATCH_SIZE:
        weight = pi_resize_kernel(weight, PATCH_SIZE)
        what = f"patch kernel {kernel} -> {PATCH_SIZE} (pseudo-inverse resize"
        if kernel < PATCH_SIZE:
            exact.append(what + f": exact for {kernel} px patches each resized to {PATCH_SIZE} px)")
        else:
            approximate.append(what + ": down-sampling loses detail)")
    out["vit.patch_embedding.patch_embeddings.weight"] = weight
    out["vit.patch_embedding.patch_embeddings.bias"] = bias

    pos = source.take("pos_embed")
    n = pos.shape[1]
    has_token = "cls_token" in source
    lead = 0 if math.isqrt(n) ** 2 == n else 1
    if lead and not (has_token and math.isqrt(n - 1) ** 2 == n - 1):
        raise ValueError(f"pos_embed: {n} positions are neither a square grid nor a class token and a square grid")
    grid = math.isqrt(n - lead)
    out["vit.patch_embedding.position_embeddings"] = resize_position_grid(pos[:, lead:], native_grid)
    if grid != native_grid:
        approximate.append(f"position grid {grid}x{grid} -> {native_grid}x{native_grid} (bicubic)")
    if has_token:
        token = source.take("cls_token")
        if lead:
            token = token + pos[:, :1]  # the bundle adds positions to the patch tokens only
            exact.append("class-token position folded into the class token")
        out["vit.cls_token"] = token
    return out, exact, approximate


def _leftovers(source: _Source, backbone: str) -> dict[str, str]:
    """Source keys not mapped: the dropped ones with their reason; any other stops the conversion."""
    dropped = {}
    for key in source.state:
        if key in source.used:
            continue
        reason = next((why for start, why in DROPPED.items() if key.startswith(start)), None)
        if reason is None:
            raise ValueError(f"{key}: no counterpart in the bundle's {backbone} encoder (not a plain ViT block?)")
        dropped[key] = reason
    return dropped


def _check_against(weights: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], backbone: str) -> None:
    """Every encoder key provided, none extra, every shape equal; else stop naming the key."""
    missing = [k for k in target if k not in weights]
    if missing:
        raise ValueError(f"encoder key {missing[0]} is not provided by the file ({len(missing)} missing)")
    for key, value in weights.items():
        if key not in target:
            raise ValueError(f"{key}: the {backbone} encoder has no such key")
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(
                f"{_source_name(key)}: shape {tuple(value.shape)} from the file, {tuple(target[key].shape)} for "
                f"{key} in the {backbone} encoder"
            )


def _source_name(key: str) -> str:
    """The file's (DINOv2 / timm) name of an encoder key, for messages."""
    names = {dst: src for src, (dst, _) in BLOCK_MAP.items()}
    m = re.match(r"^vit\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m and m.group(2) in names:
        return f"blocks.{m.group(1)}.{names[m.group(2)]}.{m.group(3)}"
    fixed = {"vit.cls_token": "cls_token", "vit.patch_embedding.position_embeddings": "pos_embed"}
    return fixed.get(key, key.replace("vit.patch_embedding.patch_embeddings.", "patch_embed.proj.").replace("vit.", ""))


def _check_input(state: Mapping[str, torch.Tensor], layout: str | None) -> str:
    """The detected layout of ``state``; stops on an empty, foreign or unknown one, or an unknown ``layout``."""
    if not isinstance(state, Mapping) or not state:
        raise ValueError("expected a non-empty state_dict (a mapping of parameter names to tensors)")
    detected = detect_layout(state)
    _refuse_foreign(state)
    if detected not in VIT_LAYOUTS:
        sample = ", ".join(list(state)[:5])
        raise ValueError(
            f"not a timm ViT or DINOv2 state_dict (no patch_embed.proj.weight); the file starts with: {sample}"
        )
    if layout is not None and layout not in VIT_LAYOUTS:
        raise ValueError(f"--layout {layout}: choose one of {', '.join(VIT_LAYOUTS)}")
    return str(detected)


def convert_published_vit(
    state: Mapping[str, torch.Tensor],
    layout: str | None = None,
    backbone: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    prefix: str = "encoder.",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a published ViT state_dict (``timm_vit`` or ``dinov2``, see the module docstring) onto
    ``MultiTaskNet(backbone).encoder``.

    Args:
        state: the file's state_dict (timm, DINOv2 or transformers' Dinov2 names).
        layout: ``timm_vit``, ``dinov2`` or None (detected from the keys; both map the same way).
        backbone: ``vit_s16`` / ``vit_b16``, or None for the one of the source's width and depth.
        mean, std: the published input normalisation per input channel (default ImageNet's for RGB).
        prefix: the key prefix of the result.

    Returns:
        ``(weights, report)``: ``weights`` has every encoder key as ``<prefix><name>`` (float32); ``report`` has
        ``layout``, ``backbone``, ``vit_pool`` (``token`` when the source has a class token), ``mapped`` (source
        keys used), ``blocks``, ``layer_scales``, ``exact`` and ``approximate`` (what was folded or resized),
        ``dropped`` (key -> reason) and ``encoder_keys``.

    Raises:
        ValueError: naming the key, for an unknown or foreign layout, a missing key, a key without a counterpart
            or a shape that differs.
    """
    detected = _check_input(state, layout)
    source = _Source(_renamed(state))
    backbone = _backbone_for(source.state, backbone)
    pool = "token" if "cls_token" in source else "mean"
    encoder = MultiTaskNet(num_classes=1, backbone=backbone, vit_pool=pool).encoder
    target = encoder.state_dict()
    blocks, scales = _map_blocks(source, VIT_BACKBONES[backbone]["num_layers"])
    embeddings, exact, approximate = _map_embeddings(source, encoder.native_grid, mean, std)
    weights = {**blocks, **embeddings}
    dropped = _leftovers(source, backbone)
    _check_against(weights, target, backbone)
    if scales:
        exact.append(f"LayerScale folded into attn.proj and mlp.fc2 ({scales} gammas)")
    report = {
        "layout": layout or detected,
        "backbone": backbone,
        "vit_pool": pool,
        "mapped": sorted(source.used),
        "blocks": VIT_BACKBONES[backbone]["num_layers"],
        "layer_scales": scales,
        "exact": exact,
        "approximate": approximate,
        "dropped": dropped,
        "encoder_keys": len(target),
    }
    return {prefix + k: v.contiguous() for k, v in weights.items()}, report


def format_vit_report(report: Mapping[str, Any]) -> str:
    """A few lines for the console: counts, what is exact, what is approximate, what was dropped."""
    lines = [
        f"{report['layout']} -> {report['backbone']} (vit_pool {report['vit_pool']}): {len(report['mapped'])} source "
        f"tensors mapped onto all {report['encoder_keys']} encoder keys, {report['blocks']} blocks",
        "  exact: " + ("; ".join(report["exact"]) or "names only"),
        "  approximate: " + ("; ".join(report["approximate"]) or "nothing"),
    ]
    if report["dropped"]:
        lines.append("  dropped: " + "; ".join(f"{k} ({why})" for k, why in report["dropped"].items()))
    return "\n".join(lines)
