"""The GPU check's aim and its summary: what a reader needs from ``gpu_check.json`` in a few lines.

The aim is SimCLR pretraining with the shipped resnet10 at 224 px: at least 15,000 views/s, and at least 0.95 of
the plain loop's throughput in the same run. ``aim_status`` judges it on ``pretrain_resnet10`` (the configs'
default, eager) and on ``pretrain_resnet10_compile``; ``summary_text`` writes one line per part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AIM", "aim_status", "summary_text"]

AIM = {
    "text": "SimCLR with resnet10 at 224 px: >= 15,000 views/s and >= 0.95 of the plain loop",
    "views_per_s": 15000.0,
    "ratio": 0.95,
}
AIM_PARTS = ("pretrain_resnet10", "pretrain_resnet10_compile")


def aim_status(parts: Mapping[str, Mapping[str, Any]], dry: bool) -> dict[str, Any]:
    """The aim with ``status`` (met, met with torch.compile only, not met, or why it was not judged) and the
    figures of each SimCLR resnet10 part that was measured."""
    measured = {}
    for name in AIM_PARTS:
        record = parts.get(name)
        if record and record["status"] == "ok":
            views, ratio = record["result"]["workflow"], record["result"]["ratio"]
            met = views >= AIM["views_per_s"] and ratio >= AIM["ratio"]
            measured[name] = {"views_per_s": round(views, 1), "ratio": round(ratio, 3), "met": met}
    if dry:
        status = "not judged: a dry run (CPU, toy sizes)"
    elif not measured:
        eager = parts.get(AIM_PARTS[0]) or {}
        status = f"not measured: pretrain_resnet10 {eager.get('status', 'not run')}: {eager.get('reason')}"
    elif measured.get(AIM_PARTS[0], {}).get("met"):
        status = "met"
    elif any(m["met"] for m in measured.values()):
        status = "met with torch.compile only"
    else:
        status = "not met"
    return {**AIM, "status": status, "measured": measured}


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def part_line(record: Mapping[str, Any]) -> str:
    """One part's figures (or why there are none), its peak GPU memory and its time."""
    if record["status"] != "ok":
        return f"{record['status']}: {record['reason']}"
    r = record["result"]
    if "workflow" in r:
        text = f"workflow {_rate(r['workflow'])} {r['unit']}, plain loop {_rate(r['plain'])}, ratio {r['ratio']:.3f}"
    elif "saliency_cost_ratio" in r:
        text = f"plain {_rate(r['plain'])} {r['unit']}, with Grad-CAM++ {_rate(r['saliency'])} "
        text += f"({r['saliency_cost_ratio']:.2f} x the time)"
    elif "speed_up" in r:
        rates = r["images_per_s"]
        text = f"speed-up {r['speed_up']:.2f} x ({_rate(rates['overlay'])} vs {_rate(rates['reference'])} images/s), "
        text += f"max prob. difference {r['max_abs_prob_diff']:.2g}, mask pixels differing "
        text += f"{100 * r['mask_pixels_differing']:.3f} % ({r['images_compared']} images)"
    else:
        text = f"backend {r['backend']}, {r['world_size']} process(es), run {r['run_s']:.1f} s"
    peak = record["peak_gpu_memory_mb"]
    peak_text = f"peak {peak:,.0f} MiB" if isinstance(peak, (int, float)) else "peak GPU memory not measured"
    return f"ok: {text}; {peak_text}; {record['seconds']:.0f} s"


def summary_text(results: Mapping[str, Any]) -> str:
    """The summary: what ran where, the aim, one line per part, and the failed and cut parts."""
    env = results["environment"]
    mode = " (DRY RUN on the CPU: toy sizes, no figure to report)" if results["mode"] == "dry" else ""
    device = env["device"] + (f" ({env['gpu_memory_gib']} GiB, sm {env['compute_capability']})" if env["cuda"] else "")
    aim = results["aim"]
    lines = [
        f"GPU check of chest_xray_ssl_multitask {results['bundle_version']}, {results['started']}{mode}",
        f"device: {device}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, MONAI {env['monai']}, "
        f"TensorRT {env['tensorrt']}",
        f"time: {results['wall_s']:.0f} s for the parts (budget {results['budget_s']} s)",
        f"aim: {aim['text']}: {aim['status']}",
    ]
    lines += [
        f"  {name}: {_rate(m['views_per_s'])} views/s, ratio {m['ratio']:.3f}" for name, m in aim["measured"].items()
    ]
    width = max(len(name) for name in results["parts"])
    lines += [""] + [f"{name:<{width}}  {part_line(r)}" for name, r in results["parts"].items()]
    lines += ["", f"failed: {', '.join(results['failed']) or 'none'}", f"cut: {', '.join(results['cut']) or 'none'}"]
    if results["cut"]:
        lines.append(
            f"rerun the cut parts: python -m benchmarks gpu --parts {','.join(results['cut'])} --out <another>"
        )
    return "\n".join(lines) + "\n"
