"""The TensorRT overlay against configs/inference.json: the speed-up of the prediction pass and what it changes.

``configs/inference_trt.json`` is an overlay, run as ``--config_file "['configs/inference.json',
'configs/inference_trt.json']"``, whose network goes through MONAI's ``trt_compile``. ``measure`` compares it with
inference.json in two ways, with saliency ``none`` on both sides (an engine gives no gradients, so no Grad-CAM):

* speed: each config list's ``network`` and ``inferer``, built with the same overrides and loaded with the same
  weights, run on the same batch as MONAI's evaluator runs them (no_grad, the configs' autocast), interleaved in
  alternating order; the median batch of each side gives images/s and ``speed_up`` (the median batch of
  inference.json, the ``reference``, over the ``overlay``'s). The first batch builds the engine (an ONNX export
  and a TensorRT build): it is timed on its own;
* outputs: both run as commands (``python -m monai.bundle run``) on the same images; ``max_abs_prob_diff`` is the
  largest difference of any class probability of any image, ``mask_pixels_differing`` the share of lung-mask
  pixels that differ (over every image, at the input's size).

The weights are a copy of ``models/`` in a work folder (``ckpt_dir``), so an engine saved beside ``ckpt_file`` is
built from these weights in this run. ``blockers`` says why the comparison cannot run here (the overlay missing,
no CUDA, or TensorRT's packages not installed); the GPU check records those as the reason it was skipped.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bundle import workflow
from bundle.checkpoints import load_weights
from bundle.inference.tensorrt import missing_requirement
from bundle.values import as_bool, autocast_dtype

from .memory import peak_memory_mb, reset_peak
from .timing import IterationTimer, sync

__all__ = ["OVERLAY", "REFERENCE", "CANDIDATE", "blockers", "Side", "time_sides", "compare_outputs", "measure"]

OVERLAY = workflow.CONFIGS / "inference_trt.json"
REFERENCE = ["inference"]
CANDIDATE = ["inference", str(OVERLAY)]
MODELS = workflow.ROOT / "models"


def blockers(overlay: Path = OVERLAY) -> list[str]:
    """Why the overlay cannot be compared here: the overlay's file missing, and the bundle's own sentence on what
    TensorRT lacks on this machine (``bundle.inference.tensorrt.missing_requirement``); empty when it can run."""
    reasons = [] if overlay.is_file() else [f"{overlay.relative_to(workflow.ROOT).as_posix()} missing"]
    missing = missing_requirement("cuda")
    return reasons + ([missing] if missing else [])


@dataclass
class Side:
    """One config list's prediction pass: its network (with the weights) and inferer, under its autocast."""

    network: torch.nn.Module
    inferer: Any
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype; None: no autocast
    image_size: int

    @classmethod
    def build(cls, configs: Sequence[str], overrides: Mapping[str, Any]) -> Side:
        """``network`` and ``inferer`` of ``configs`` with ``overrides``, loaded from their ``ckpt_file``."""
        ids = ("network", "inferer", "amp", "amp_dtype", "ckpt_file", "device", "image_size")
        network, inferer, amp, amp_dtype, ckpt_file, device, image_size = workflow.parsed(configs, overrides, *ids)
        network.load_state_dict(load_weights(ckpt_file))  # as the config's CheckpointLoader, before any batch
        device = torch.device(device)
        on = as_bool(amp, "amp") and device.type == "cuda"
        return cls(network.eval(), inferer, device, autocast_dtype(amp_dtype) if on else None, int(image_size))

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inferer's outputs for a batch ``x`` (B, 1, H, W), as MONAI's evaluator computes them."""
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.inferer(x, self.network)


def time_sides(sides: Mapping[str, Side], batch_size: int, warmup: int, iters: int) -> dict[str, Any]:
    """Each side on the same random batch (``batch_size`` images at the first side's size): the first batch alone,
    then ``warmup`` + ``iters`` batches interleaved in alternating order; images/s of the median batch."""
    first = next(iter(sides.values()))
    x = torch.rand(batch_size, 1, first.image_size, first.image_size, device=first.device)
    first_batch_s = {}
    for name, side in sides.items():  # builds (or loads) an engine
        start = time.perf_counter()
        side(x)
        sync(side.device)
        first_batch_s[name] = round(time.perf_counter() - start, 2)
    timers = {name: IterationTimer(side.device, warmup, iters) for name, side in sides.items()}
    for i in range(warmup + iters):
        for name, side in list(sides.items())[:: 1 if i % 2 == 0 else -1]:
            timers[name].start()
            side(x)
            timers[name].tick(batch_size)
    medians = {name: timer.median_seconds() for name, timer in timers.items()}
    return {
        "images_per_s": {name: batch_size / s for name, s in medians.items()},
        "median_batch_s": medians,
        "first_batch_s": first_batch_s,
    }


def _rows(folder: Path) -> dict[str, dict[str, Any]]:
    """``predictions.json`` of an inference run, by image."""
    return {row["image"]: row for row in json.loads((folder / "predictions.json").read_text(encoding="utf-8"))}


def _mask(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image) > 0


def compare_outputs(reference: Path, candidate: Path) -> dict[str, Any]:
    """What ``candidate``'s inference run changed against ``reference``'s on the images both predicted.

    Raises:
        RuntimeError: no image was predicted (status ok) by both runs.
    """
    ref, cand = _rows(reference), _rows(candidate)
    both = sorted(k for k in ref.keys() & cand.keys() if ref[k]["status"] == "ok" and cand[k]["status"] == "ok")
    if not both:
        raise RuntimeError(f"no image predicted by both {reference} and {candidate}")
    probs = [k for k in ref[both[0]] if k.startswith("prob_")]
    diff = max(abs(float(ref[k][p]) - float(cand[k][p])) for k in both for p in probs)
    differing = pixels = 0
    for k in both:
        a, b = _mask(ref[k]["lung_mask_file"]), _mask(cand[k]["lung_mask_file"])
        differing, pixels = differing + int((a != b).sum()), pixels + a.size
    return {
        "images_compared": len(both),
        "images_not_compared": len(ref.keys() | cand.keys()) - len(both),  # in one run only, or failed in one
        "max_abs_prob_diff": diff,
        "mask_pixels_differing": differing / pixels,
        "predicted_class_changed": sum(ref[k]["predicted"] != cand[k]["predicted"] for k in both),
    }


def run_command(configs: Sequence[str], overrides: Mapping[str, Any], log: Path, timeout: float) -> float:
    """``python -m monai.bundle run`` of ``configs`` with ``overrides`` (its output in ``log``); returns seconds.

    Raises:
        RuntimeError: the run failed (its last lines in the message).
    """
    argv = workflow.command(configs, overrides)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(workflow.ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run(argv, cwd=workflow.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(argv[2:6])} exited with status {proc.returncode}: {' | '.join(tail)}")
    return round(time.perf_counter() - start, 2)


def measure(
    work: Path,
    batch_size: int,
    warmup: int,
    iters: int,
    images: int,
    timeout: float,
    candidate: Sequence[str] = CANDIDATE,
) -> tuple[dict[str, Any], float]:
    """Speed and outputs of ``candidate`` (the overlay) against inference.json; returns the result and the peak
    memory of the timed passes in MiB (``benchmarks.memory``). ``images`` of data/sample are predicted by both."""
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "model.recipe.json"):
        shutil.copy2(MODELS / name, models / name)
    base = {"ckpt_dir": str(models), "saliency": "none", "batch_size": batch_size}
    sides = {"reference": Side.build(REFERENCE, base), "overlay": Side.build(candidate, base)}
    device = sides["reference"].device
    reset_peak(device)
    speed = time_sides(sides, batch_size, warmup, iters)
    peak = peak_memory_mb(device)
    del sides
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the runs below are processes of their own
    run = {**base, "dataset_dir": str(workflow.ROOT / "data" / "sample" / "images"), "max_images": images}
    run.update(write_saliency=False, write_overlays=False)
    seconds = {
        name: run_command(configs, {**run, "output_dir": str(work / name)}, work / f"{name}.log", timeout)
        for name, configs in (("reference", REFERENCE), ("overlay", candidate))
    }
    medians = speed["median_batch_s"]
    result = {
        "speed_up": medians["reference"] / medians["overlay"],
        **speed,
        **compare_outputs(work / "reference", work / "overlay"),
        "run_s": seconds,
        "settings": {"batch_size": batch_size, "warmup": warmup, "iters": iters, "images": images, "saliency": "none"},
    }
    return result, peak
