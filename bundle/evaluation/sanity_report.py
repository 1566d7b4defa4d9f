"""The saliency sanity check's results as files: Markdown tables, a plot and JSON (the measurement is
``bundle.evaluation.sanity``)."""

from __future__ import annotations

import os
from typing import Any

from ..atomic import atomic_write, atomic_write_json
from ..plots import plot_cascade

__all__ = ["cascade_table", "comparison_table", "methods_table", "write_cascade", "write_comparison", "write_methods"]


def _write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def cascade_table(result: dict[str, Any]) -> str:
    """The check as a Markdown table, a row per step."""
    lines = [
        f"Cascading randomisation, {result['method']} on `{result['saliency_layer']}`, {result['n_images']} images: "
        f"{'passed' if result['passed'] else 'FAILED'} (highest mean Spearman once the deepest stage is random: "
        f"{result['worst_random']:.3f}, must be < {result['max_correlation']})",
        "",
        "| step | randomised (cumulative) | Spearman (mean +- std) | SSIM (mean +- std) |",
        "| --- | --- | --- | --- |",
    ]
    for i, s in enumerate(result["steps"]):
        what = "none (control: trained vs itself)" if not s["randomised"] else "+ " + ", ".join(s["randomised"])
        lines.append(
            f"| {i} | {what} | {s['spearman_mean']:.3f} +- {s['spearman_std']:.3f} "
            f"| {s['ssim_mean']:.3f} +- {s['ssim_std']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def comparison_table(result: dict[str, Any]) -> str:
    """The layer comparison as a Markdown table, a row per candidate layer."""
    lines = [
        f"{result['method']}, " + _comparison_header(result),
        "",
        "| saliency_layer | cells | lung attention ratio | ms/image | x forward | Spearman, random classifier "
        "| Spearman, worst once deepest stage random | Spearman, all random | SSIM, all random | sanity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lung = _lung_cell(r)
        lines.append(
            f"| `{r['layer']}` | {r['cells']}x{r['cells']} | {lung} | {r['ms_per_image']:.1f} "
            f"| {r['cost_vs_forward']:.2f} | {r['spearman_classifier_random']:.3f} "
            f"| {r['spearman_worst_random']:.3f} | {r['spearman_random']:.3f} "
            f"| {r['ssim_random']:.3f} | {'pass' if r['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def _lung_cell(row: dict[str, Any]) -> str:
    """A row's lung attention ratio, ``mean +- std``, or ``-`` without images that have a lung mask."""
    return f"{row['lung_ratio_mean']:.2f} +- {row['lung_ratio_std']:.2f}" if "lung_ratio_mean" in row else "-"


def _comparison_header(result: dict[str, Any]) -> str:
    return (
        f"{result['n_images']} images ({result['n_masks']} with lung masks), "
        f"{'x'.join(map(str, result['image_size']))} px; plain forward {result['forward_ms']:.1f} ms/image "
        f"(CPU, {result['threads']} thread(s))"
    )


def methods_table(result: dict[str, Any]) -> str:
    """The method comparison as a Markdown table, a row per method, with the mean Spearman of every cascade step
    (control, classifier, then the encoder top to bottom, the stem last)."""
    lines = [
        _comparison_header(result),
        "",
        "| saliency | explains | cells | lung attention ratio | ms/image | x forward "
        "| Spearman per step (control, classifier, deepest ... stem) | worst once deepest stage random | sanity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lung = _lung_cell(r)
        steps = " ".join(f"{v:.2f}" for v in r["spearman_steps"])
        lines.append(
            f"| {r['method']} | `{r['layer']}` | {r['cells']}x{r['cells']} | {lung} | {r['ms_per_image']:.1f} "
            f"| {r['cost_vs_forward']:.2f} | {steps} | {r['spearman_worst_random']:.3f} "
            f"| {'pass' if r['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def write_cascade(result: dict[str, Any], out_dir: str, plot: bool = True) -> list[str]:
    """``saliency_check.json``, ``saliency_check.md`` and (with ``plot``) ``saliency_check.png`` in ``out_dir``."""
    paths = [os.path.join(out_dir, f"saliency_check.{ext}") for ext in ("json", "md", "png")]
    atomic_write_json(result, paths[0])
    _write_text(paths[1], cascade_table(result))
    if not plot:
        return paths[:2]
    plot_cascade(result, paths[2])
    return paths


def write_comparison(result: dict[str, Any], out_dir: str) -> list[str]:
    """``saliency_layers.json`` and ``saliency_layers.md`` in ``out_dir``."""
    paths = [os.path.join(out_dir, f"saliency_layers.{ext}") for ext in ("json", "md")]
    atomic_write_json(result, paths[0])
    _write_text(paths[1], comparison_table(result))
    return paths


def write_methods(result: dict[str, Any], out_dir: str) -> list[str]:
    """``saliency_methods.json`` and ``saliency_methods.md`` in ``out_dir``."""
    paths = [os.path.join(out_dir, f"saliency_methods.{ext}") for ext in ("json", "md")]
    atomic_write_json(result, paths[0])
    _write_text(paths[1], methods_table(result))
    return paths
