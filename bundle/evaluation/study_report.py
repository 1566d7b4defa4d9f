"""The label-efficiency study's results: per-cell summaries over seeds with bootstrap intervals, the Markdown
tables, the curves and ``report.md`` (``bundle.evaluation.study`` runs the study).

A cell is one protocol x initialisation x label fraction; ``cell_summary`` sums up its seeds' metrics.json and
per-image predictions. Leave-one-source-out rows (``source_row``) compare, on one source's images, the model
trained without that source with the one trained on every source.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..plots import plot_label_efficiency
from . import bootstrap
from .bootstrap import Predictions, read_predictions, scores

__all__ = [
    "METRICS",
    "CURVE_METRICS",
    "BOOTSTRAPPED",
    "metric_value",
    "cell_summary",
    "format_entry",
    "results_table",
    "draw_curves",
    "per_source_scores",
    "source_row",
    "loso_table",
    "loso_summary",
    "write_report",
]

# where metrics.json keeps the lung attention ratio (attention inside the lungs / the lungs' share of the image,
# mean over the test images): one place to change if the report's layout changes; absent -> NaN ("n/a")
LUNG_ATTENTION_RATIO = ("lung_attention", "lung_attention_ratio", "mean")
# metric -> (label in the report, where metrics.json keeps it)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "auc_macro": ("macro AUC", ("auc_macro",)),
    "accuracy": ("accuracy", ("accuracy",)),
    "hm": ("HM", ("hm",)),
    "dice_lung": ("lung Dice", ("dice_lung",)),
    "lung_attention_ratio": ("lung attention ratio", LUNG_ATTENTION_RATIO),
    "flagged": ("images flagged", ("lung_attention", "attention_outside_lungs", "share")),
}
CURVE_METRICS = ("auc_macro", "lung_attention_ratio")
# metrics with a bootstrap interval: those computed from the per-image predictions (test_predictions.csv; lung Dice
# where the file has its per-image column)
BOOTSTRAPPED = tuple(m for m in METRICS if m in bootstrap.METRICS)


def metric_value(metrics: dict, path: Sequence[str]) -> float:
    """The number at ``path`` in a metrics.json, NaN when it is absent or null."""
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def cell_summary(per_seed: dict[int, dict], predictions: list[Predictions], n_resamples: int, seed: int) -> dict:
    """Per metric: values per seed, mean, std over seeds, and the bootstrap interval (``n_resamples`` resamples of
    the test patients, or images without patient ids, drawn from ``seed``) where predictions allow."""
    intervals = bootstrap.bootstrap(predictions, n_resamples, seed=seed) if predictions else None
    summary = {}
    for name, (_, path) in METRICS.items():
        values = [metric_value(m, path) for m in per_seed.values()]
        good = [v for v in values if not math.isnan(v)]
        entry = {
            "per_seed": {str(s): (None if math.isnan(v) else v) for s, v in zip(per_seed, values)},
            "mean": statistics.mean(good) if good else None,
            "std": statistics.stdev(good) if len(good) > 1 else None,
            "interval": None,
        }
        if name in BOOTSTRAPPED and intervals is not None:
            low, high = intervals.metrics[name]
            entry["interval"] = None if math.isnan(low) else [low, high]
        summary[name] = entry
    return summary


def format_entry(entry: dict) -> str:
    """``mean ± std [low, high]``; ``n/a`` when undefined."""
    if entry["mean"] is None:
        return "n/a"
    text = f"{entry['mean']:.3f}"
    if entry["std"] is not None:
        text += f" ± {entry['std']:.3f}"
    if entry["interval"] is not None:
        text += f" [{entry['interval'][0]:.3f}, {entry['interval'][1]:.3f}]"
    return text


def results_table(cells: dict, protocols: Sequence[str], inits: Sequence[str], fractions: Sequence[float]) -> str:
    """The markdown table: one row per protocol, initialisation (``<init>+<variant>`` for a training variant other
    than the default) and fraction (those with a cell)."""
    header = "| protocol | initialisation | labels | " + " | ".join(label for label, _ in METRICS.values()) + " |"
    lines = [header, "|" + " --- |" * (3 + len(METRICS))]
    for protocol in protocols:
        for init in inits:
            for fraction in fractions:
                cell = cells.get(f"{protocol}/{init}/{fraction}")
                if cell is None:
                    continue
                values = " | ".join(format_entry(cell["metrics"][m]) for m in METRICS)
                lines.append(f"| {protocol} | {init} | {fraction:g} | {values} |")
    return "\n".join(lines)


def draw_curves(
    cells: dict, out: Path, protocols: Sequence[str], inits: Sequence[str], fractions: Sequence[float]
) -> list[Path]:
    """One PNG per protocol and curve metric under ``out/curves``: metric against label fraction, a line per
    initialisation."""
    paths = []
    nan = float("nan")
    for protocol in protocols:
        for metric in CURVE_METRICS:
            curves = {}
            for init in inits:
                entries = [cells[f"{protocol}/{init}/{f}"]["metrics"][metric] for f in fractions]
                curves[init] = {
                    "fraction": list(fractions),
                    "mean": [nan if e["mean"] is None else e["mean"] for e in entries],
                    "low": [nan if e["interval"] is None else e["interval"][0] for e in entries],
                    "high": [nan if e["interval"] is None else e["interval"][1] for e in entries],
                }
            path = out / "curves" / f"{protocol}_{metric}.png"
            title = f"{METRICS[metric][0]}, {protocol} ({'95 % bootstrap band' if metric in BOOTSTRAPPED else 'mean'})"
            paths.append(Path(plot_label_efficiency(curves, METRICS[metric][0], str(path), title)))
    return paths


def per_source_scores(pred: Predictions, sources: dict[str, str], source: str) -> dict:
    """Accuracy, mean probability of the true class and macro AUC (None where undefined) on ``source``'s images."""
    keep = np.array([sources.get(i) == source for i in pred.images])
    if not keep.any():
        return {"images": 0, "accuracy": None, "true_class_prob": None, "auc_macro": None}
    p = pred.subset(keep)
    score = scores(p)
    auc = float(score["auc_macro"][0])
    return {
        "images": int(keep.sum()),
        "accuracy": float(score["accuracy"][0]),
        "true_class_prob": float((p.prob * p.truth).sum(1).mean()),
        "auc_macro": None if math.isnan(auc) else auc,
    }


def source_row(
    source: str,
    test: list[dict],
    everything: list[dict],
    held_out: Path | None,
    in_dist: Path,
    class_names: Sequence[str],
) -> dict:
    """One source's row: its images per class and, given the predictions of the model trained without it
    (``held_out``) and of the one trained on every source (``in_dist``), both scores on its images and the drop.
    ``class_names`` name the labels."""
    row: dict[str, Any] = {"source": source, "images": len(test), "classes": {}}
    for e in test:
        name = class_names[int(e["label"])]
        row["classes"][name] = row["classes"].get(name, 0) + 1
    if held_out is None:  # a dry run: no predictions
        return row
    sources = {e["image"]: e.get("source") for e in everything}  # the split's absolute image paths
    row["held_out"] = per_source_scores(read_predictions(held_out), sources, source)
    row["in_distribution"] = per_source_scores(read_predictions(in_dist), sources, source)
    drops = {}
    for key in ("accuracy", "true_class_prob", "auc_macro"):
        a, b = row["in_distribution"][key], row["held_out"][key]
        drops[key] = None if a is None or b is None else a - b
    row["drop"] = drops
    return row


def loso_table(rows: list[dict]) -> str:
    """Markdown: per source the in-distribution and held-out scores and the drop."""

    def show(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "| source | variant | images (classes) | test images in-dist. | accuracy in-dist. / held out (drop) | "
        "p(true class) in-dist. / held out (drop) | macro AUC in-dist. / held out |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "held_out" not in r:
            continue
        i, h, d = r["in_distribution"], r["held_out"], r["drop"]
        classes = ", ".join(f"{k} {v}" for k, v in r["classes"].items())
        lines.append(
            f"| {r['source']} | {r.get('variant', 'unguided')} | {r['images']} ({classes}) | {i['images']} | "
            f"{show(i['accuracy'])} / "
            f"{show(h['accuracy'])} ({show(d['accuracy'])}) | {show(i['true_class_prob'])} / "
            f"{show(h['true_class_prob'])} ({show(d['true_class_prob'])}) | {show(i['auc_macro'])} / "
            f"{show(h['auc_macro'])} |"
        )
    return "\n".join(lines)


def loso_summary(rows: list[dict]) -> str:
    """Markdown: per training variant, the mean over sources of the accuracy and true-class probability drops."""
    lines = ["| variant | sources | mean accuracy drop | mean p(true class) drop |", "| --- | --- | --- | --- |"]
    for variant in dict.fromkeys(r.get("variant", "unguided") for r in rows if "drop" in r):
        drops = [r["drop"] for r in rows if "drop" in r and r.get("variant", "unguided") == variant]
        acc = [d["accuracy"] for d in drops if d["accuracy"] is not None]
        prob = [d["true_class_prob"] for d in drops if d["true_class_prob"] is not None]
        mean_acc = f"{statistics.mean(acc):.3f}" if acc else "n/a"
        mean_prob = f"{statistics.mean(prob):.3f}" if prob else "n/a"
        lines.append(f"| {variant} | {len(drops)} | {mean_acc} | {mean_prob} |")
    return "\n".join(lines)


def write_report(
    args: argparse.Namespace, cells: dict, curves: list[Path], loso: list[dict], commands: list[str]
) -> str:
    """``<out>/report.md``: settings, the table, the curves, the leave-one-source-out table, every command."""
    lines = [
        "# Label-efficiency study",
        "",
        f"Data: {args.data} (patient-grouped split, split_seed {args.split_seed}: {args.split_counts}); "
        f"backbone {args.backbone or 'of the configs'}; {args.image_size} px; "
        f"{args.pretrain_epochs} pretraining / {args.finetune_epochs} fine-tuning epochs; "
        f"seeds {', '.join(map(str, args.seeds))}.",
        "",
        "Each cell: mean ± standard deviation over seeds [95 % bootstrap interval over the test patients (images "
        f"without a patient id count as one each), {args.bootstrap} resamples, seeds averaged within each "
        "resample] on the test split. Intervals only for the scores computed from the per-image predictions "
        "(macro AUC, accuracy, HM, lung Dice); the lung attention ratio (share of the saliency inside the lungs / "
        "the lungs' share of the image; 1 = chance) and the share of images flagged (ratio below 1) are mean ± std. "
        "`probe` is a linear probe on the frozen encoder (the lung decoder trains too). Training variants: "
        "`+lungs_only` classifies the predicted lungs only, `+lung_guided` adds the lung-guidance loss "
        f"(w_lung_guidance {args.w_lung_guidance:g}); rows without one train without lung guidance (w_lung_guidance "
        "0, as every study before it).",
        "",
        results_table(cells, args.protocols, args.rows, args.fractions),
        "",
        "## Curves",
        "",
    ]
    lines += [f"![{p.stem}]({p.relative_to(args.out).as_posix()})" for p in curves]
    if loso:
        lines += [
            "",
            "## Leave one source out",
            "",
            f"Fine-tuning with 100 % of the labels, initialisation {args.loso_init_used}, seed {args.seeds[0]}, "
            "without the source; tested on all its images. In-distribution: the model trained on every source, "
            "on that source's images of the test split. Many sources hold one class, where AUC is undefined (n/a): "
            "accuracy and the mean probability of the true class are the comparable scores. A drop means the "
            "model relied on what is specific to the source (site, device, population), not only on the disease.",
            "",
            loso_table(loso),
            "",
            loso_summary(loso),
        ]
    lines += ["", "## Commands (from any working directory)", "", "```", *commands, "```", ""]
    text = "\n".join(lines)
    with atomic_write(args.out / "report.md", "w") as f:
        f.write(text)
    return text
