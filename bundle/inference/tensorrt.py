"""TensorRT inference (``configs/inference_trt.json`` on top of ``configs/inference.json``): what it needs, checked
before any work, and where its engine is kept.

The overlay compiles ``network_def_trt`` (``MultiTaskNet``: class logits and lung logits from one pass) with
MONAI's ``trt_compile``: on the first batch MONAI exports the network to ONNX and TensorRT builds an engine at
``trt_precision`` for batches of 1 to ``batch_size`` at ``image_size`` x ``image_size``; the engine is saved in
``trt_dir`` (``engine_base``) and reused by later runs while it is newer than the weights. An engine computes no
gradients, so Grad-CAM cannot run through it: the overlay's ``saliency`` is ``none``, and a run asking for a map is
refused (``configs/inference.json`` alone makes them). Autocast and channels-last are the engine's business
(``trt_precision``): ``amp`` and ``channels_last`` stay false.

Without CUDA, TensorRT, polygraphy or cuda-python MONAI's ``trt_compile`` returns the network unchanged with a
warning, and the run would go on in PyTorch; ``tensorrt_check`` (in the settings check, first step of ``run``) stops
it instead, with one message saying what is missing and what to do.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import fail
from ..values import Check, Rule, choice, described, device_type, is_true, output_folder, show

__all__ = ["TRT_PRECISIONS", "REQUIRED_PACKAGES", "missing_requirement", "engine_base", "tensorrt_check"]

TRT_PRECISIONS = ("fp16", "bf16", "tf32", "fp32")  # what MONAI's TrtCompiler builds
# what MONAI's TensorRT path imports (pip name -> its modules, one of which must be importable)
REQUIRED_PACKAGES = {
    "tensorrt": ("tensorrt",),
    "polygraphy": ("polygraphy",),
    "cuda-python": ("cuda.bindings.runtime", "cuda.cudart"),  # MONAI's engine synchronises its stream with it
}
OVERLAY = "configs/inference_trt.json"
WHAT_TO_DO = (
    "run configs/inference.json alone (PyTorch, with saliency maps), or run the overlay on a CUDA machine with "
    "TensorRT 10 installed (pip install tensorrt polygraphy cuda-python)"
)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package (cuda for cuda.bindings)
        return False


def missing_requirement(device: Any) -> str | None:
    """What the TensorRT overlay lacks on this machine for ``device`` (one sentence, with what to do), or None."""
    if not torch.cuda.is_available():
        return f"{OVERLAY} runs a TensorRT engine, which needs a CUDA GPU, and torch sees none here: {WHAT_TO_DO}"
    if device_type(device) != "cuda":
        return f"{OVERLAY} runs a TensorRT engine on a CUDA GPU, but device is {show(str(device))}: use device cuda"
    missing = [pip for pip, modules in REQUIRED_PACKAGES.items() if not any(_importable(m) for m in modules)]
    if missing:
        return f"{OVERLAY} needs the packages {', '.join(missing)}, not installed here: {WHAT_TO_DO}"
    return None


def engine_base(
    trt_dir: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    precision: str,
    batch_size: int,
    image_size: int,
    lungs_only: bool,
) -> str:
    """The engine's path without ``.plan`` (``trt_compile``'s ``base_path``) in ``trt_dir``, which is created.

    One engine per weights file, precision, batch range (1 to ``batch_size``), image size and class path
    (``lungs_only`` changes the graph, not the weights): ``<trt_dir>/model_fp16_b8_224.plan``.
    """
    os.makedirs(trt_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(os.fspath(ckpt_file)))[0]
    lungs = "_lungs_only" if is_true(lungs_only, "lungs_only") else ""
    name = f"{stem}_{str(precision).lower()}_b{int(batch_size)}_{int(image_size)}{lungs}"
    return os.path.join(os.fspath(trt_dir), name)


def tensorrt_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """The TensorRT overlay runs on a CUDA GPU with TensorRT, without saliency maps, autocast or channels-last.

    The overlay is recognised by its ``trt_precision`` setting.

    Raises:
        UserError: at once, with ``missing_requirement``'s one sentence, on a machine without CUDA or TensorRT: no
            setting can fix that, so it is not listed among the settings' problems.
    """
    if "trt_precision" not in s:
        return []
    missing = missing_requirement(s.get("device", "cuda"))
    if missing:
        fail(missing)
    problems = []
    if str(s.get("saliency", "none")).lower() != "none":
        problems.append(
            f"saliency: {show(s['saliency'])} needs gradients, which a TensorRT engine does not compute; with "
            f"{OVERLAY} use saliency none (its default), or configs/inference.json alone for saliency maps"
        )
    problems += [
        f"{name}: true has no effect on a TensorRT engine (its precision is trt_precision); set {name} false"
        for name in ("amp", "channels_last")
        if is_true(s.get(name, False), name)
    ]
    if str(s["trt_precision"]).lower() == "bf16" and not _bf16_supported():
        problems.append("trt_precision: 'bf16' is not supported by this GPU; use fp16")
    return problems


def _bf16_supported() -> bool:
    return bool(torch.cuda.is_bf16_supported())


# the settings of the overlay (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "trt_precision": described(
        choice(TRT_PRECISIONS), "TensorRT engine precision of configs/inference_trt.json (fp16: half, bf16: Ampere+)"
    ),
    "trt_dir": described(
        output_folder,
        "folder of the TensorRT engines, each built on a first run and reused while newer than the weights",
    ),
}
CHECKS: tuple[Check, ...] = (tensorrt_check,)
