"""One report format for every suite: ``make_report`` (and ``training_report`` for the training suites), printed
by ``print_report`` and written as JSON by ``write_json``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch

from bundle.atomic import atomic_write_json

from .memory import memory_note

__all__ = ["REPORT_KEYS", "make_report", "training_report", "print_report", "write_json"]

REPORT_KEYS = (
    "suite",
    "title",
    "unit",
    "throughput",
    "figure",
    "value",
    "meaning",
    "peak_memory_mb",
    "settings",
    "details",
)


def make_report(
    suite: str,
    title: str,
    unit: str,
    throughput: Mapping[str, float],
    figure: str,
    value: float,
    meaning: str,
    peak_memory_mb: Mapping[str, float],
    settings: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One suite's result, with the same keys (``REPORT_KEYS``) for every suite.

    ``throughput`` holds each measured side (``unit``), ``figure`` names the headline number ``value`` and
    ``meaning`` says how to read it; ``details`` holds what only this suite has.
    """
    report = {
        "suite": suite,
        "title": title,
        "unit": unit,
        "throughput": {k: float(v) for k, v in throughput.items()},
        "figure": figure,
        "value": float(value),
        "meaning": meaning,
        "peak_memory_mb": {k: round(float(v), 1) for k, v in peak_memory_mb.items()},
        "settings": dict(settings),
        "details": dict(details or {}),
    }
    return report


def training_report(
    suite: str, title: str, unit: str, measured: Mapping[str, Any], settings: Mapping[str, Any], device: torch.device
) -> dict[str, Any]:
    """The report of a training suite: ``ratio`` = bundle / plain throughput (higher is better, 1.0 = no overhead)."""
    ratio = measured["bundle"] / measured["plain"] if measured["plain"] else float("nan")
    before, after = measured["plain_runs"]
    details: dict[str, Any] = {}
    data_path = measured.get("data_path")
    if data_path:
        # the three parts of one run side by side: data alone, model step alone (plain), whole workflow (bundle)
        details["data_path"] = {k: round(float(v), 2) for k, v in data_path.items() if k != "num_workers"}
        details["data_path_note"] = (
            f"{unit} of the config's train DataLoader + prepare_batch with no model: per_worker with 1 worker, "
            f"all_workers with num_workers {data_path['num_workers']}"
            + ("; loader_per_worker: 1 worker, views not made" if "loader_per_worker" in data_path else "")
        )
        details["data_headroom"] = round(data_path["all_workers"] / measured["plain"], 2) if measured["plain"] else 0
    details["plain_runs"] = f"{before:.2f} before, {after:.2f} after the workflow (plain = their mean)"
    medians = measured.get("median_seconds")
    if medians and medians["bundle"]:
        details["median_iteration_s"] = {k: round(float(v), 3) for k, v in medians.items()}
        details["median_ratio"] = round(medians["plain"] / medians["bundle"], 3)
    details["memory"] = memory_note(device, workers=True)
    return make_report(
        suite,
        title,
        unit,
        {"bundle": measured["bundle"], "plain": measured["plain"]},
        "ratio",
        ratio,
        f"the bundle runs at {ratio:.3f} x the plain loop's throughput (bundle / plain; higher is better, "
        "1.0 = no overhead)",
        measured["peak_memory_mb"],
        settings,
        details,
    )


def _detail_text(value: Any) -> str:
    """One ``details`` entry as printed: a mapping as ``name value, ...`` (floats to two decimals)."""
    if not isinstance(value, Mapping):
        return str(value)
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())


def print_report(report: Mapping[str, Any], file: Any = None) -> None:
    """Print one report, the same way for every suite."""
    unit = report["unit"]
    setup = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    rows = [("settings", setup)]
    rows += [(side, f"{v:10.2f} {unit}") for side, v in report["throughput"].items()]
    rows.append((report["figure"], f"{report['value']:10.3f}  {report['meaning']}"))
    rows.append(("peak_memory_mb", ", ".join(f"{k} {v:.0f}" for k, v in report["peak_memory_mb"].items())))
    rows += [(k, _detail_text(v)) for k, v in report["details"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"== {report['suite']}: {report['title']}"] + [f"   {k:<{width}} : {v}" for k, v in rows]
    print("\n".join(lines), file=file or sys.stdout, flush=True)


def write_json(path: str | os.PathLike, results: Mapping[str, Any]) -> None:
    """Write ``{suite: report}`` to ``path`` (relative to the caller's working directory)."""
    atomic_write_json(dict(results), path)
