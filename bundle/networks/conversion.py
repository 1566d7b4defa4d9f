"""Initial weights from natural images: map a torchvision-layout ResNet state_dict onto the bundle's encoder.

torchvision (and timm) ResNets name their parameters ``conv1``, ``bn1``, ``layer1``...``layer4`` and ``fc``;
MONAI's ``ResNetEncoder`` (the FlexibleUNet backbone inside ``MultiTaskNet``) uses the same names, so the
mapping is ``<name>`` -> ``encoder.<name>`` where the shapes agree. Differences handled here:

- ``conv1.weight`` has 3 input channels; radiographs have 1. Summing over the input-channel axis gives the
  exact response of the RGB filter to a grey image copied into all three channels.
- ``fc.*`` is the ImageNet classifier: dropped.
- MONAI's resnet18 and resnet34 use parameter-free shortcuts (type "A": strided pooling plus zero channels)
  where torchvision has 1x1 projection convolutions (``layerN.0.downsample.*``): those have no counterpart and
  are reported as unmapped. resnet50 and deeper use projection shortcuts in both and map fully.

The result has ``encoder.*`` keys, so ``configs/train.json`` and every pretraining config load it with
``--pretrained_ckpt`` (``bundle.checkpoints.load_pretrained``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from .multitask import MultiTaskNet

__all__ = ["convert_torchvision_resnet", "format_report"]

logger = logging.getLogger(__name__)

TORCHVISION_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc.")


def convert_torchvision_resnet(
    state: Mapping[str, torch.Tensor], backbone: str = "resnet18", in_channels: int = 1, prefix: str = "encoder."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a torchvision-layout ResNet state_dict onto ``MultiTaskNet(backbone).encoder``.

    Returns ``(weights, report)``: ``weights`` has keys ``<prefix><name>``; ``report`` has ``mapped`` (source
    keys copied), ``folded`` (source keys whose input channels were summed), ``unmapped`` (source key -> reason)
    and ``not_provided`` (encoder keys the source lacks; they keep their initialisation).
    """
    if not isinstance(state, Mapping) or not state:
        raise ValueError("expected a non-empty state_dict (a mapping of parameter names to tensors)")
    if not any(k.startswith(TORCHVISION_PREFIXES) for k in state):
        sample = ", ".join(list(state)[:5])
        raise ValueError(f"no torchvision ResNet keys (conv1, bn1, layer1-4, fc) found; the file starts with: {sample}")
    target = MultiTaskNet(num_classes=1, backbone=backbone, in_channels=in_channels).encoder.state_dict()
    weights: dict[str, torch.Tensor] = {}
    mapped: list[str] = []
    folded: list[str] = []
    unmapped: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            unmapped[key] = f"not a tensor ({type(value).__name__})"
            continue
        if key.startswith("fc."):
            unmapped[key] = "ImageNet classifier: dropped"
            continue
        if key not in target:
            reason = "no counterpart in the encoder"
            if ".downsample." in key:
                reason = f"projection shortcut: MONAI's {backbone} uses parameter-free (type A) shortcuts"
            unmapped[key] = reason
            continue
        want = target[key].shape
        if key == "conv1.weight" and value.ndim == 4 and value.shape[1] != want[1]:
            if want[1] != 1:
                unmapped[key] = f"{value.shape[1]} input channels cannot be mapped to {want[1]}"
                continue
            value = value.sum(dim=1, keepdim=True)  # grey image in all three channels: same response
            folded.append(key)
        if value.shape != want:
            unmapped[key] = f"shape {tuple(value.shape)} differs from the encoder's {tuple(want)}"
            continue
        weights[prefix + key] = value.detach().clone().to(target[key].dtype)
        mapped.append(key)
    not_provided = [k for k in target if k not in state or k in unmapped]
    if not mapped:
        raise ValueError(f"no key maps onto the {backbone} encoder: is the file a {backbone} state_dict?")
    report = {
        "backbone": backbone,
        "mapped": mapped,
        "folded": folded,
        "unmapped": unmapped,
        "not_provided": not_provided,
        "encoder_keys": len(target),
    }
    return weights, report


def format_report(report: Mapping[str, Any]) -> str:
    """A few lines for the console: counts, folded keys, every unmapped key with its reason."""
    lines = [
        f"{report['backbone']}: {len(report['mapped'])} tensors mapped onto {report['encoder_keys']} encoder keys",
        f"  conv1 folded to 1 channel by summing the RGB filters: {', '.join(report['folded']) or 'no'}",
    ]
    if report["unmapped"]:
        lines.append(f"  unmapped source tensors ({len(report['unmapped'])}), by module:")
        by_reason: dict[str, list[str]] = {}
        for key, why in report["unmapped"].items():
            module = key.rsplit(".", 1)[0]
            if module not in by_reason.setdefault(why, []):
                by_reason[why].append(module)
        lines.extend(f"    {', '.join(modules)}: {why}" for why, modules in by_reason.items())
    if report["not_provided"]:
        lines.append(
            f"  encoder keys left at their initialisation ({len(report['not_provided'])}): "
            + ", ".join(report["not_provided"])
        )
    return "\n".join(lines)
