"""Saliency sanity check (cascading randomisation, Adebayo et al. 2018) of a trained model, and the layer comparison.

    python scripts/saliency_check.py --dataset_dir <your data> --n_images 32 --out runs/saliency_check
    python scripts/saliency_check.py --dataset_dir <your data> --compare_layers --out runs/saliency_layers
    python scripts/saliency_check.py --dataset_dir <your data> --compare_methods --out runs/saliency_methods

The model is built as configs/train.json + configs/evaluate.json build it (``network_def`` with ``--backbone``,
``--image_size`` preprocessing, the patient-level ``splits`` of ``--datalist`` / ``--dataset_dir``) and loads
``--ckpt_file`` (default: <bundle_root>/models/model.pt). It takes the first ``--n_images`` images of ``--split``,
computes their ``--saliency`` maps on ``--saliency_layer`` (null: the default layer), then re-initialises the
weights from the classifier down to the stem, step by step and keeping earlier steps, and after each step logs the
mean Spearman rank correlation and SSIM of the new maps with the trained model's. Writes saliency_check.json,
saliency_check.md and saliency_check.png in ``--out``. It exits with status 2 when the check fails (maps that
survive a fully random network).

``--compare_layers`` (optionally followed by saliency_layer ids) measures instead, for each candidate layer, the
lung attention ratio on the images with a lung mask, the map resolution, the CPU cost (``--threads`` threads)
against a plain forward, and the same check: saliency_layers.json and saliency_layers.md in ``--out``.
``--compare_methods`` (optionally followed by methods) does the same for saliency methods, each on its default
layer (none named: Grad-CAM++ and Grad-CAM, and for a ViT rollout and attention_gradient too), with the mean
Spearman of every step: saliency_methods.json and saliency_methods.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate

from bundle.atomic import make_folder
from bundle.checkpoints import check_recipe, check_weights, load_weights, read_recipe
from bundle.checkpoints.recipe import RECIPE_KEYS
from bundle.errors import fail, run_main
from bundle.evaluation.sanity import (
    MAX_CORRELATION,
    candidate_layers,
    cascading_randomization,
    compare_layers,
    compare_methods,
)
from bundle.evaluation.sanity_report import (
    cascade_table,
    comparison_table,
    methods_table,
    write_cascade,
    write_comparison,
    write_methods,
)
from bundle.networks.vit import is_vit
from bundle.relevance import RELEVANCE_METHODS
from bundle.saliency import GRADCAM_METHODS, SaliencyInferer
from bundle.values import output_folder

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("test", "validation", "training", "all")
CHECKED_METHODS = GRADCAM_METHODS + RELEVANCE_METHODS  # occlusion: hundreds of passes per image and step


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle_root", type=Path, default=ROOT, help="the bundle (configs/, models/)")
    parser.add_argument("--dataset_dir", help="image folder with datalist.json (configs' default: data/sample)")
    parser.add_argument("--datalist", help="datalist (default: <dataset_dir>/datalist.json)")
    parser.add_argument("--ckpt_file", type=Path, help="weights (default: <bundle_root>/models/model.pt)")
    parser.add_argument("--backbone", help="encoder of the weights (configs' default: resnet10)")
    parser.add_argument("--image_size", type=positive_int, help="input size (configs' default: 224)")
    parser.add_argument(
        "--saliency", default="gradcampp", choices=CHECKED_METHODS, help="rollout, attention_gradient: ViT"
    )
    parser.add_argument("--saliency_layer", help="layer id, e.g. encoder.layer4 or encoder.layer3+encoder.layer4")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the configs' patient-level split to use")
    parser.add_argument("--n_images", type=positive_int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="split seed (configs' seed) and randomisation seed")
    parser.add_argument("--batch_size", type=positive_int, default=8)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: the configs' choice)")
    parser.add_argument("--max_correlation", type=float, default=MAX_CORRELATION, help="pass threshold")
    compare = parser.add_mutually_exclusive_group()
    compare.add_argument("--compare_layers", nargs="*", metavar="LAYER", help="compare layers (none named: candidates)")
    compare.add_argument(
        "--compare_methods", nargs="*", metavar="METHOD", choices=CHECKED_METHODS, help="compare methods (none: all)"
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads for --compare_layers timing")
    parser.add_argument("--timing_images", type=positive_int, default=16, help="images timed per layer")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timing repeats (the median is kept)")
    parser.add_argument("--out", type=Path, help="output folder (default: <bundle_root>/eval/saliency_check)")
    parser.add_argument("--no_plot", action="store_true", help="no saliency_check.png")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[ConfigParser, torch.nn.Module, torch.device]:
    """The configs' parser with the command's overrides, the network with the weights loaded, and the device."""
    root = args.bundle_root.resolve()
    configs = [root / "configs" / "train.json", root / "configs" / "evaluate.json"]
    for c in configs:
        if not c.is_file():
            fail(f"--bundle_root {root}: no {c.relative_to(root)} (not a bundle folder)")
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    overrides: dict[str, Any] = {"bundle_root": str(root), "seed": args.seed}
    for key in ("dataset_dir", "datalist", "backbone", "image_size"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.dataset_dir is not None and args.datalist is None:
        overrides["datalist"] = os.path.join(args.dataset_dir, "datalist.json")
    parser.update(overrides)
    device = torch.device(args.device) if args.device else parser.get_parsed_content("device")
    ckpt = args.ckpt_file or Path(parser.get_parsed_content("ckpt_dir")) / "model.pt"
    parser["weights_recipe"] = read_recipe(ckpt)  # the weights' settings are the defaults, as in evaluation
    check_recipe(parser["weights_recipe"], {k: parser.get_parsed_content(k) for k in RECIPE_KEYS}, ckpt)
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as e:  # MONAI wraps the network's ValueError (e.g. an unknown backbone) in its own
        fail(f"--backbone {parser['backbone']!r}: cannot build the network ({str(e).splitlines()[-1]})", e)
    network.load_state_dict(load_weights(check_weights(ckpt, network, name="ckpt_file")))
    return parser, network.to(device).eval(), device


def load_images(parser: ConfigParser, args: argparse.Namespace, need_masks: bool):
    """(N, 1, H, W) images and (N, 1, H, W) masks (None when ``need_masks`` is False or no entry has one)."""
    splits = parser.get_parsed_content("splits")
    entries = [e for s in ("training", "validation", "test") for e in splits[s]] if args.split == "all" else None
    entries = entries if entries is not None else list(splits[args.split])
    if need_masks:
        with_mask = [e for e in entries if e.get("mask")]
        if not with_mask:
            print(f"warning: no image of the {args.split} split has a lung mask: no lung attention", flush=True)
        entries = with_mask or entries
    entries = entries[: args.n_images]
    if not entries:
        fail(f"--split {args.split}: no images in that split of {parser.get_parsed_content('datalist')}")
    transform = parser.get_parsed_content("validate#preprocessing")
    prepare = parser.get_parsed_content("prepare_batch")
    images, targets = prepare(list_data_collate([transform(e) for e in entries]))
    has = targets.get("has_mask")
    masks = targets["mask"] if need_masks and has is not None and bool((has > 0).all()) else None
    return images, masks


def check_methods(args: argparse.Namespace, network: torch.nn.Module, backbone: str) -> list[str] | None:
    """Stops with one message on a method or layer the network cannot explain, before any image is read; returns
    the methods ``--compare_methods`` compares (None without it)."""
    methods = args.compare_methods
    if methods is not None and not methods:
        methods = list(CHECKED_METHODS if is_vit(backbone) else GRADCAM_METHODS)
    for method in [args.saliency] + list(methods or []):
        if method in RELEVANCE_METHODS and not is_vit(backbone):
            fail(f"--saliency / --compare_methods {method}: explains a ViT's attention, and {backbone} has none")
    if args.saliency in RELEVANCE_METHODS and args.saliency_layer:
        fail(f"--saliency_layer: {args.saliency} reads every block's attention; leave --saliency_layer out")
    if args.saliency in GRADCAM_METHODS:
        SaliencyInferer(args.saliency, args.saliency_layer).hooks(network)  # an unknown layer stops here
    for name in args.compare_layers or []:
        SaliencyInferer(args.saliency, name).hooks(network)
    return methods


def comparison(
    args: argparse.Namespace,
    network: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    methods: list[str] | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], str, list[str]]:
    """``--compare_layers`` or ``--compare_methods``: the result, its table and the files written to ``--out``."""
    options = dict(
        seed=args.seed,
        batch_size=args.batch_size,
        timing_images=args.timing_images,
        repeats=args.repeats,
        threads=args.threads,
        max_correlation=args.max_correlation,
        log=log,
    )
    if methods is not None:
        result = compare_methods(network, images, masks, methods, **options)
        return result, methods_table(result), write_methods(result, str(args.out))
    layers = args.compare_layers or candidate_layers(network)
    result = compare_layers(network, images, masks, layers, args.saliency, **options)
    return result, comparison_table(result), write_comparison(result, str(args.out))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parser, network, device = build(args)
    methods = check_methods(args, network, parser.get_parsed_content("backbone"))
    args.out = (args.out or args.bundle_root / "eval" / "saliency_check").resolve()
    problem = output_folder(args.out)
    if problem:
        fail(f"--out {args.out} {problem}")
    make_folder(args.out, "the --out folder")
    compare = args.compare_layers is not None or methods is not None
    images, masks = load_images(parser, args, need_masks=compare)
    print(f"{images.shape[0]} images of the {args.split} split, {tuple(images.shape[2:])} px, on {device}", flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    if compare:
        _, table, paths = comparison(args, network, images.to(device), masks, methods, log)
        print(table, flush=True)
        print("written: " + ", ".join(paths), flush=True)
        return 0
    result = cascading_randomization(
        network,
        images.to(device),
        args.saliency,
        args.saliency_layer,
        args.seed,
        args.batch_size,
        args.max_correlation,
        log=log,
    )
    paths = write_cascade(result, str(args.out), plot=not args.no_plot)
    print(cascade_table(result), flush=True)
    print("written: " + ", ".join(paths), flush=True)
    return 0 if result["passed"] else 2


if __name__ == "__main__":
    sys.exit(run_main(main))
