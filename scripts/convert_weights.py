"""Convert a natural-image ResNet state_dict (torchvision / timm key layout) into initial weights for the encoder.

    python scripts/convert_weights.py --input resnet18_imagenet.pth --output models/resnet18_imagenet_encoder.pt \\
        [--backbone resnet18] [--report models/resnet18_imagenet_encoder.json]

The input is a file the user already has (nothing is downloaded): a plain state_dict, or one wrapped as
``{"state_dict" | "model" | "network": ...}``. The first convolution's 3 input channels are summed into 1.
The output has ``encoder.*`` keys; start training or pretraining from it with ``--pretrained_ckpt <output>``.
What mapped and what did not (with reasons) is printed and, with ``--report``, written as JSON.
"""

from __future__ import annotations

import argparse
import logging
import os

from bundle.atomic import atomic_write_json
from bundle.checkpoints import load_pretrained, load_weights, make_recipe, save_weights
from bundle.networks import MultiTaskNet
from bundle.networks.conversion import convert_torchvision_resnet, format_report


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="torchvision-layout ResNet state_dict (.pth / .pt)")
    parser.add_argument("--output", required=True, help="where to write the encoder weights")
    parser.add_argument("--backbone", default="resnet18", help="the bundle's backbone id (resnet10...resnet200)")
    parser.add_argument("--report", default=None, help="optional JSON report of mapped / unmapped keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        state = load_weights(args.input)
        weights, report = convert_torchvision_resnet(state, backbone=args.backbone)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"convert_weights: {args.input}: {e}\n")
    # an encoder of natural images: no image size of its own (the fine-tuning run's applies)
    save_weights(weights, args.output, make_recipe({"backbone": args.backbone, "source": "torchvision"}, "pretrained"))
    # prove the file loads into the fine-tuning network, with the same log that train.json prints
    load_pretrained(MultiTaskNet(num_classes=1, backbone=args.backbone), args.output)
    print(format_report(report))
    print(f"written: {os.path.abspath(args.output)} (use it with --pretrained_ckpt)")
    if args.report:
        paths = {"input": os.path.abspath(args.input), "output": os.path.abspath(args.output)}
        atomic_write_json({**report, **paths}, args.report)
    return report


if __name__ == "__main__":
    main()
