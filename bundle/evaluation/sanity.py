"""Saliency sanity check by cascading randomisation (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018),
and the comparison of candidate Grad-CAM layers behind the default ``saliency_layer``.

A map that explains the trained model must change when the weights it explains are destroyed. The check takes the
trained model's maps of N images, then re-initialises the network's weights from the top (classifier, deepest encoder
stage, ..., stem), keeping the earlier steps, and after each step compares the new maps with the trained ones: mean
Spearman rank correlation and mean structural similarity (MONAI's ``SSIMMetric``). The trained model against itself
is the control (1.0 for a deterministic method). Maps that stay similar after the network is random show the image's
edges, not what the classifier learned.

The explained class stays the trained model's class for each image at every step, so that only the weights change.
This module measures; ``bundle.evaluation.sanity_report`` writes the results as tables, a plot and JSON.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import SSIMMetric
from torch import nn

from ..saliency import GRADCAM_METHODS, SaliencyInferer, encoder_stages, parse_target_layers
from .attention import lung_attention, lung_share

__all__ = [
    "MAX_CORRELATION",
    "cascade_steps",
    "randomize_",
    "rank_correlation",
    "structural_similarity",
    "saliency_maps",
    "cascading_randomization",
    "compare_variants",
    "compare_layers",
    "compare_methods",
    "candidate_layers",
]

logger = logging.getLogger(__name__)

# A map passes when, once the classifier and the deepest encoder stage are random (and at every later step), its
# mean rank correlation with the trained model's maps stays below this: at 0.5 less than a quarter of the rank
# variance is shared (r^2 < 0.25).
MAX_CORRELATION = 0.5


def cascade_steps(network: nn.Module) -> list[tuple[str, list[str]]]:
    """The randomisation steps, top first: ``(label, module names)`` from the classifier down to the stem.

    ResNet encoders: ``classifier``, ``encoder.layer4`` ... ``encoder.layer1``, ``stem`` (``conv1``, ``bn1``).
    EfficientNet encoders: ``classifier``, ``encoder._blocks.<n-1>`` ... ``encoder._blocks.0``, ``stem``
    (``_conv_stem``, ``_bn0``). ViT encoders: ``classifier``, ``encoder.vit.blocks.11`` (with the final
    ``encoder.vit.norm``, which only it feeds) ... ``encoder.vit.blocks.0``, ``stem`` (the patch embedding with its
    position table, and the class token when there is one). The decoder is left alone: the classification maps
    never read it.
    """
    modules = dict(network.named_modules())
    encoder = getattr(network, "encoder", None)
    if "classifier" not in modules or encoder is None:
        raise ValueError(f"{type(network).__name__} has no 'classifier' and 'encoder' to randomise")
    steps = [("classifier", ["classifier"])]
    if all(hasattr(encoder, f"layer{i}") for i in range(1, 5)):
        steps += [(f"encoder.layer{i}", [f"encoder.layer{i}"]) for i in range(4, 0, -1)]
        stem = ["encoder.conv1", "encoder.bn1"]
    elif isinstance(getattr(getattr(encoder, "vit", None), "blocks", None), nn.ModuleList):
        last = len(encoder.vit.blocks) - 1
        steps.append((f"encoder.vit.blocks.{last}", [f"encoder.vit.blocks.{last}", "encoder.vit.norm"]))
        steps += [(f"encoder.vit.blocks.{i}", [f"encoder.vit.blocks.{i}"]) for i in range(last - 1, -1, -1)]
        stem = ["encoder.vit.patch_embedding", "encoder.vit.cls_token"]
    elif isinstance(getattr(encoder, "_blocks", None), nn.Sequential):
        steps += [(f"encoder._blocks.{i}", [f"encoder._blocks.{i}"]) for i in range(len(encoder._blocks) - 1, -1, -1)]
        stem = ["encoder._conv_stem", "encoder._bn0"]
    else:
        raise ValueError(f"no randomisation steps for encoder {type(encoder).__name__} (ResNet, EfficientNet, ViT)")
    params = dict(network.named_parameters())
    steps.append(("stem", [n for n in stem if n in modules or n in params]))
    return steps


def _free_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters inside ``module`` that no ``reset_parameters`` covers (a ViT's position table, its class token)."""
    return [
        p
        for sub in module.modules()
        if not callable(getattr(sub, "reset_parameters", None))
        for p in sub.parameters(recurse=False)
    ]


def randomize_(network: nn.Module, names: Sequence[str], seed: int = 0) -> int:
    """Re-initialise, in place, the named modules' (or parameters') weights with their own initialisation; returns
    the count of layers and parameters re-drawn.

    ``reset_parameters`` of every convolution, linear and normalisation layer inside them (BatchNorm: weight 1,
    bias 0, running statistics 0 / 1); a parameter no such layer holds (a ViT's position table and class token)
    is drawn from a normal of std 0.02 truncated at +-2, MONAI's initialisation of both. Under ``seed``, leaving
    the global random state as it was.
    """
    modules, params = dict(network.named_modules()), dict(network.named_parameters())
    devices = sorted({p.device.index or 0 for p in network.parameters() if p.is_cuda})
    count = 0
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for name in names:
            free = [params[name]] if name in params and name not in modules else _free_parameters(modules[name])
            with torch.no_grad():
                for p in free:
                    nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)
                    count += 1
            for sub in modules[name].modules() if name in modules else []:
                if callable(getattr(sub, "reset_parameters", None)):
                    sub.reset_parameters()
                    count += 1
    if not count:
        raise ValueError(f"nothing to randomise in {list(names)}")
    return count


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, tied values sharing their average rank (as Spearman's correlation needs)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps, (B, 1, H, W) x 2 -> (B,), ties ranked by their average.

    Written here because MONAI (and the bundle's pinned packages) have no rank correlation. A constant map (all
    zero, say) ranks nothing: its correlation with any map is taken as 0 rather than undefined, so that a map that
    vanished counts as changed.
    """
    out = []
    for x, y in zip(a.detach().flatten(1).cpu().double().numpy(), b.detach().flatten(1).cpu().double().numpy()):
        rx, ry = _average_ranks(x), _average_ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
        out.append(float((rx * ry).sum()) / denom if denom > 0 else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def structural_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (MONAI's ``SSIMMetric``, 2D, 11-px Gaussian window, data range 1) of maps (B, 1, H, W) -> (B,)."""
    metric = SSIMMetric(spatial_dims=2, data_range=1.0)
    return metric(a.detach().float().cpu(), b.detach().float().cpu()).reshape(-1).double()


def saliency_maps(
    network: nn.Module,
    images: torch.Tensor,
    inferer: SaliencyInferer,
    classes: torch.Tensor | None = None,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (N, 1, H, W) and explained classes (N,) of ``images`` (N, C, H, W), in batches, as an evaluator runs.

    ``classes`` (N,) fixes the class each map explains; None explains the prediction.
    """
    maps, explained = [], []
    device = next(network.parameters()).device
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            cls = None if classes is None else classes[i : i + batch_size].to(device)
            out = inferer(images[i : i + batch_size].to(device), network, saliency_class=cls)
            maps.append(out["saliency"].float().cpu())
            explained.append(out["saliency_class"].cpu())
    return torch.cat(maps), torch.cat(explained)


def _summary(name: str, modules: Sequence[str], rho: torch.Tensor, ssim: torch.Tensor) -> dict[str, Any]:
    return {
        "step": name,
        "randomised": list(modules),
        "spearman_mean": float(rho.mean()),
        "spearman_std": float(rho.std()) if rho.numel() > 1 else 0.0,
        "ssim_mean": float(ssim.mean()),
        "ssim_std": float(ssim.std()) if ssim.numel() > 1 else 0.0,
    }


def cascading_randomization(
    network: nn.Module,
    images: torch.Tensor,
    method: str = "gradcampp",
    target_layer: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_correlation: float = MAX_CORRELATION,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The cascading randomisation check of ``network``'s maps on ``images`` (N, C, H, W); the network is not changed.

    Returns:
        ``{"method", "saliency_layer", "n_images", "max_correlation", "passed", "steps": [...]}``; the first step
        is the control (``trained``: the trained model against itself), each later one holds ``spearman_mean``,
        ``spearman_std``, ``ssim_mean``, ``ssim_std`` after randomising ``randomised`` (and every step above it).
        ``worst_random``: the highest mean rank correlation from the step that randomises the deepest encoder
        stage on; ``passed``: ``worst_random`` is below ``max_correlation``.
    """
    log = log or logger.info
    net = copy.deepcopy(network).eval()  # randomised in place: never the caller's network
    inferer = SaliencyInferer(method, target_layer)
    reference, classes = saliency_maps(net, images, inferer, batch_size=batch_size)
    again, _ = saliency_maps(net, images, inferer, classes, batch_size)
    steps = [_summary("trained", [], rank_correlation(reference, again), structural_similarity(reference, again))]
    log(
        f"step {0:2d} {'trained (control)':<22} spearman {steps[0]['spearman_mean']:.3f} ssim {steps[0]['ssim_mean']:.3f}"
    )
    for i, (name, modules) in enumerate(cascade_steps(net), start=1):
        randomize_(net, modules, seed + i)
        maps, _ = saliency_maps(net, images, inferer, classes, batch_size)
        steps.append(_summary(name, modules, rank_correlation(reference, maps), structural_similarity(reference, maps)))
        s = steps[-1]
        log(
            f"step {i:2d} {'+ ' + name:<22} spearman {s['spearman_mean']:.3f} +- {s['spearman_std']:.3f}"
            f"  ssim {s['ssim_mean']:.3f} +- {s['ssim_std']:.3f}"
        )
    layer = target_layer or inferer.explained_layer(net)
    worst = max(s["spearman_mean"] for s in steps[2:])  # steps 0, 1: the control and the classifier alone
    return {
        "method": method,
        "saliency_layer": layer,
        "n_images": int(images.shape[0]),
        "max_correlation": max_correlation,
        "worst_random": worst,
        "passed": worst < max_correlation,
        "steps": steps,
    }


def candidate_layers(network: nn.Module) -> list[str]:
    """The layers and combinations compared for the default: each encoder stage, deep to shallow, then the mean
    of the two and of the three deepest stages, and the product of the two deepest."""
    s = encoder_stages(network)
    return [s[3], s[2], s[1], s[0], f"{s[2]}+{s[3]}", f"{s[1]}+{s[2]}+{s[3]}", f"{s[2]}*{s[3]}"]


def _ms_per_image(fn: Callable[[torch.Tensor], Any], images: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Median over ``repeats`` of the time to run ``fn`` on every batch, in ms per image (after one warm-up)."""
    with torch.no_grad():
        fn(images[:batch_size])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, images.shape[0], batch_size):
                fn(images[i : i + batch_size])
            times.append((time.perf_counter() - start) * 1000 / images.shape[0])
    return float(np.median(times))


# a variant compared: (saliency method, saliency_layer or None for the method's default)
Variant = tuple[str, str | None]


def _time_variants(
    network: nn.Module,
    images: torch.Tensor,
    variants: Sequence[Variant],
    batch_size: int,
    repeats: int,
    threads: int | None,
) -> tuple[float, list[float], int]:
    """CPU ms per image of the plain forward and of each variant's maps, and the number of threads they ran on."""
    cpu_net = copy.deepcopy(network).eval().cpu()
    timed = images.cpu()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        plain = SaliencyInferer("none")
        forward_ms = _ms_per_image(lambda x: plain(x, cpu_net), timed, batch_size, repeats)
        costs = []
        for method, layer in variants:
            inferer = SaliencyInferer(method, layer)
            costs.append(_ms_per_image(lambda x, inf=inferer: inf(x, cpu_net), timed, batch_size, repeats))
    finally:
        torch.set_num_threads(old_threads)
    return forward_ms, costs, threads or old_threads


def _lung_ratio(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Mean and spread over the images of the lung attention divided by the lung share."""
    ratio = lung_attention(maps, masks.cpu()) / lung_share(masks.cpu())
    ratio = ratio[torch.isfinite(ratio)]
    return {
        "lung_ratio_mean": float(ratio.mean()) if ratio.numel() else float("nan"),
        "lung_ratio_std": float(ratio.std()) if ratio.numel() > 1 else 0.0,
    }


def _variant_row(
    network: nn.Module, images: torch.Tensor, masks: torch.Tensor | None, variant: Variant, batch_size: int
) -> dict[str, Any]:
    """A variant's row as far as its maps go: method, explained layer, cells per side and, with masks, lung ratio."""
    method, layer = variant
    inferer = SaliencyInferer(method, layer)
    maps, _ = saliency_maps(network, images, inferer, batch_size=batch_size)
    if method in GRADCAM_METHODS:
        cells = max(min(a.shape[2:]) for a in inferer.hooks(network).activations.values())
    else:
        cells = inferer.cells or min(images.shape[2:])  # the patch grid; occlusion: the input's pixels
    row: dict[str, Any] = {"method": method, "layer": layer or inferer.explained_layer(network), "cells": int(cells)}
    if masks is not None:
        row.update(_lung_ratio(maps, masks))
    return row


def _randomised_figures(check: dict[str, Any]) -> dict[str, Any]:
    """A variant's figures from its cascading check: the fully randomised network, the classifier alone, the worst
    and the mean Spearman of every step (the control first)."""
    return {
        "spearman_random": check["steps"][-1]["spearman_mean"],
        "ssim_random": check["steps"][-1]["ssim_mean"],
        "spearman_classifier_random": check["steps"][1]["spearman_mean"],
        "spearman_worst_random": check["worst_random"],
        "spearman_steps": [s["spearman_mean"] for s in check["steps"]],
        "passed": check["passed"],
    }


def _log_row(row: dict[str, Any], log: Callable[[str], None]) -> None:
    """One line per variant: resolution, lung ratio, cost and the randomised network's similarity."""
    cells = row["cells"]
    log(
        f"{row['method']:<18} {row['layer']:<45} {cells:3d}x{cells:<3d}"
        f" lung ratio {row.get('lung_ratio_mean', float('nan')):.2f}"
        f"  {row['ms_per_image']:.1f} ms/image ({row['cost_vs_forward']:.2f}x forward)"
        f"  random: spearman {row['spearman_random']:.3f} ssim {row['ssim_random']:.3f}"
        f"  worst {row['spearman_worst_random']:.3f} {'pass' if row['passed'] else 'FAIL'}"
    )


def compare_variants(
    network: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    variants: Sequence[Variant],
    seed: int = 0,
    batch_size: int = 8,
    timing_images: int = 16,
    repeats: int = 3,
    threads: int | None = 1,
    max_correlation: float = MAX_CORRELATION,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Lung attention ratio, map resolution, CPU cost and the cascading check for each (method, layer) variant.

    Args:
        network: the trained network (not changed).
        images: (N, C, H, W) images the network was not trained on.
        masks: (N, 1, H, W) lung masks of those images (non-zero = lung), or None (no lung figures).
        variants: (saliency method, saliency_layer id or None for the method's default).
        timing_images: images timed per variant; timing runs on the CPU with ``threads`` threads (None: as set).

    Returns:
        ``{"n_images", "image_size", "forward_ms", "rows": [...]}``, a row per variant with ``method``,
        ``layer``, ``cells`` (cells per side of the finest layer), ``lung_ratio_mean`` / ``_std`` (lung attention
        divided by the lung share, per image), ``ms_per_image``, ``cost_vs_forward``, ``spearman_random`` and
        ``ssim_random`` (fully randomised network), ``spearman_steps`` (every step) and ``passed``.
    """
    log = log or logger.info
    forward_ms, costs, used_threads = _time_variants(
        network, images[:timing_images], variants, batch_size, repeats, threads
    )
    log(f"plain forward {forward_ms:.1f} ms/image on the CPU ({used_threads} thread(s))")
    rows = []
    for (method, layer), cost in zip(variants, costs):
        row = _variant_row(network, images, masks, (method, layer), batch_size)
        row["ms_per_image"], row["cost_vs_forward"] = cost, cost / forward_ms
        check = cascading_randomization(
            network, images, method, layer, seed, batch_size, max_correlation, log=lambda _: None
        )
        row.update(_randomised_figures(check))
        rows.append(row)
        _log_row(row, log)
    return {
        "n_images": int(images.shape[0]),
        "n_masks": 0 if masks is None else int(masks.shape[0]),
        "image_size": list(images.shape[2:]),
        "threads": used_threads,
        "forward_ms": forward_ms,
        "max_correlation": max_correlation,
        "rows": rows,
    }


def compare_layers(
    network: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    layers: Sequence[str],
    method: str = "gradcampp",
    **kwargs: Any,
) -> dict[str, Any]:
    """``compare_variants`` of one Grad-CAM ``method`` on each candidate layer (``parse_target_layers`` ids);
    the result also names the ``method``. Keyword arguments as ``compare_variants``."""
    for layer in layers:
        parse_target_layers(layer)
    return {"method": method, **compare_variants(network, images, masks, [(method, la) for la in layers], **kwargs)}


def compare_methods(
    network: nn.Module, images: torch.Tensor, masks: torch.Tensor | None, methods: Sequence[str], **kwargs: Any
) -> dict[str, Any]:
    """``compare_variants`` of saliency ``methods``, each on its default layer (a ViT: Grad-CAM's patch grid
    against the attention's rollout and gradient relevance). Keyword arguments as ``compare_variants``."""
    return {"method": "methods", **compare_variants(network, images, masks, [(m, None) for m in methods], **kwargs)}
