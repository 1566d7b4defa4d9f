"""Convert published encoder weights into initial weights for the bundle's encoder (nothing is downloaded).

    python scripts/convert_weights.py --input resnet18_imagenet.pth --output models/resnet18_imagenet_encoder.pt
    python scripts/convert_weights.py --input rad-dino/model.safetensors --output models/rad_dino_vit_b16.pt \\
        [--layout auto|torchvision_resnet|timm_vit|dinov2] [--backbone vit_b16] [--mean M M M --std S S S] \\
        [--report models/rad_dino_vit_b16.json]

Layouts (``--layout auto``, the default, tells them from the keys):

* ``torchvision_resnet``: torchvision / timm ResNets (``conv1``, ``bn1``, ``layer1-4``) onto resnet10...200
  (``bundle.networks.conversion``); the first convolution's 3 input channels are summed into 1.
* ``timm_vit``: timm ViT-S/16 and ViT-B/16 (``.pth`` or ``.safetensors``) onto ``vit_s16`` / ``vit_b16``.
* ``dinov2``: DINOv2 ``.pth`` files and the ``transformers`` Dinov2 layout (RAD-DINO's ``model.safetensors``):
  LayerScale folded, the 14 px patch kernel resized to 16 px, the position grid to 14 x 14
  (``bundle.networks.published``; docs/vit.md says what is exact).

``--mean`` / ``--std``: the published input normalisation of a ViT (default ImageNet's), folded into the patch
embedding so that the bundle's [0, 1] grey input gives the original's features. The input is a plain state_dict, one
wrapped as ``{"state_dict" | "model" | "network": ...}``, or a ``.safetensors`` file. The output has ``encoder.*``
keys and a recipe beside it (backbone, and ``vit_pool token`` for a ViT with a class token); start training or
pretraining from it with ``--pretrained_ckpt <output>``. What mapped and what did not is printed and, with
``--report``, written as JSON. A file that cannot be converted stops with one message naming the file and the key.
"""

from __future__ import annotations

import argparse
import logging
import os

from bundle.atomic import atomic_write_json
from bundle.checkpoints import load_pretrained, load_weights, make_recipe, save_weights
from bundle.networks import MultiTaskNet
from bundle.networks.conversion import convert_torchvision_resnet, format_report
from bundle.networks.published import VIT_LAYOUTS, convert_published_vit, detect_layout, format_vit_report

LAYOUTS = ("auto", "torchvision_resnet") + VIT_LAYOUTS


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="the published weights (.pth / .pt / .safetensors)")
    parser.add_argument("--output", required=True, help="where to write the encoder weights")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS, help="the input's key layout (default: auto)")
    parser.add_argument(
        "--backbone", default=None, help="the bundle's backbone id (default: resnet18, or the ViT of the file's width)"
    )
    parser.add_argument("--mean", type=float, nargs="+", default=None, help="ViT input mean per channel (ImageNet's)")
    parser.add_argument("--std", type=float, nargs="+", default=None, help="ViT input std per channel (ImageNet's)")
    parser.add_argument("--report", default=None, help="optional JSON report of mapped / unmapped keys")
    return parser


def convert(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """(weights, report, recipe settings) of ``args.input``; ValueError naming the key when it cannot be."""
    state = load_weights(args.input)
    layout = detect_layout(state) if args.layout == "auto" else args.layout
    if layout == "torchvision_resnet":
        backbone = args.backbone or "resnet18"
        weights, report = convert_torchvision_resnet(state, backbone=backbone)
        return weights, report, {"backbone": backbone, "source": "torchvision"}
    if layout not in VIT_LAYOUTS and layout != "eva":
        sample = ", ".join(list(state)[:5])
        raise ValueError(
            f"unknown layout (not a torchvision ResNet, timm ViT or DINOv2 state_dict); the file starts with: {sample}"
        )
    weights, report = convert_published_vit(
        state, None if args.layout == "auto" else layout, args.backbone, args.mean, args.std
    )
    settings = {"backbone": report["backbone"], "vit_pool": report["vit_pool"], "source": report["layout"]}
    if report["vit_pool"] == "token":
        settings["requires"] = ["vit_pool"]  # the patch tokens attend to the class token: another pooling differs
    settings["conversion"] = {"exact": report["exact"], "approximate": report["approximate"]}
    return weights, report, settings


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry; returns the report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        weights, report, settings = convert(args)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"convert_weights: {args.input}: {e}\n")
    # an encoder of natural images: no image size of its own (the fine-tuning run's applies)
    save_weights(weights, args.output, make_recipe(settings, "pretrained"))
    # prove the file loads into the fine-tuning network, with the same log that train.json prints
    network = MultiTaskNet(num_classes=1, backbone=settings["backbone"], vit_pool=settings.get("vit_pool", "mean"))
    load_pretrained(network, args.output)
    print(format_report(report) if "folded" in report else format_vit_report(report))
    print(f"written: {os.path.abspath(args.output)} (use it with --pretrained_ckpt)")
    if args.report:
        paths = {"input": os.path.abspath(args.input), "output": os.path.abspath(args.output)}
        atomic_write_json({**report, **paths}, args.report)
    return report


if __name__ == "__main__":
    main()
