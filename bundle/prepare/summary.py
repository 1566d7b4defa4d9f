"""The summary of a preparation run: counts per class and split, what was left out and why, next command."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence

from .dedup import patient_key
from .labels import MODEL_CLASSES
from .records import Skip

__all__ = ["build_summary", "format_summary", "train_command"]

SECTIONS = ("training", "validation", "test")
# Printed in this order: problems with the data first, choices made by options last.
KIND_ORDER = (
    "missing_file",
    "unreadable",
    "bad_row",
    "no_label",
    "bad_mask",
    "duplicate_conflict",
    "unpaired_mask",
    "no_class",
    "not_dicom",
    "not_image",
    "uncertain",
    "duplicate",
    "filtered",
)


def train_command(out: str, class_names: Sequence[str], multi_label: bool) -> str:
    """The bundle training command for a prepared folder."""
    # Class names are class keys ([0-9a-z_]), so double quotes suffice for the shell.
    names = "[" + ",".join(f"'{c}'" for c in class_names) + "]"
    cmd = (
        f"python -m monai.bundle run --config_file configs/train.json --dataset_dir {shlex.quote(str(out))} "
        f'--class_names "{names}"'
    )
    return cmd + (" --multi_label True" if multi_label else "")


def model_note(class_names: Sequence[str]) -> str:
    """Whether the shipped model (``MODEL_CLASSES``) reads the datalist's labels as they are, and what to do if not."""
    names, model = list(class_names), list(MODEL_CLASSES)
    if names == model:
        return "the shipped model's classes, in its order: it evaluates this datalist as it is"
    if sorted(names) == sorted(model):
        return (
            "the shipped model's classes in another order, so the shipped model cannot evaluate this datalist; "
            f"prepare again with --classes {','.join(model)} to evaluate it"
        )
    return f"the shipped model has other classes ({', '.join(model)}): train a model on these"


def _class_counts(entries: Sequence[dict], class_names: Sequence[str], multi_label: bool) -> dict[str, int]:
    """Images per class (multi-label: positives per class), plus images with no positive class or no label."""
    counts: Counter[str] = Counter()
    for e in entries:
        label = e.get("label")
        if label is None:
            counts["(unlabelled)"] += 1
        elif multi_label:
            counts.update(name for name, v in zip(class_names, label) if v)
            counts["(no positive class)"] += not any(label)
        else:
            counts[class_names[label]] += 1
    extras = {k: counts[k] for k in ("(no positive class)", "(unlabelled)") if counts[k]}
    return {c: counts[c] for c in class_names} | extras


def build_summary(
    *,
    name: str,
    layout: str,
    src: str,
    out: str,
    class_names: Sequence[str],
    multi_label: bool,
    sections: dict[str, list[dict]],
    skipped: Sequence[Skip],
    duplicates: dict,
    notes: Sequence[str],
    options: dict,
    cache: dict | None,
) -> dict:
    """Everything a user needs to trust the datalist, as a JSON-ready dict (also saved as ``summary.json``)."""
    everything = [e for s in SECTIONS for e in sections[s]]
    per_split = {
        s: {
            "images": len(sections[s]),
            "patients": len({patient_key(e) for e in sections[s]}),
            "images_with_masks": sum("mask" in e for e in sections[s]),
            "per_class": _class_counts(sections[s], class_names, multi_label),
        }
        for s in SECTIONS
    }
    per_class = {
        c: {s: per_split[s]["per_class"].get(c, 0) for s in SECTIONS}
        for c in _class_counts(everything, class_names, multi_label)
    }
    for c in per_class:
        per_class[c]["total"] = sum(per_class[c][s] for s in SECTIONS)
    labelled = any(e.get("label") is not None for e in everything)
    return {
        "name": name,
        "layout": layout,
        "src": src,
        "out": out,
        "options": options,
        "class_names": list(class_names),
        "multi_label": multi_label,
        "images": len(everything),
        "patients": len({patient_key(e) for e in everything}),
        "images_with_masks": sum("mask" in e for e in everything),
        "per_split": per_split,
        "per_class": per_class,
        "skipped_count": len(skipped),
        "skipped_by_kind": dict(sorted(Counter(s.kind for s in skipped).items())),
        "skipped": [s.to_dict() for s in skipped],
        "duplicates": duplicates,
        "cache": cache,
        "notes": list(notes),
        "train_command": train_command(out, class_names, multi_label) if labelled and class_names else None,
        "model_classes": model_note(class_names) if labelled and class_names and not multi_label else None,
    }


def format_summary(summary: dict, per_kind: int = 5) -> str:
    """The summary as text for the terminal: ``per_kind`` examples of each kind of skipped item (all of them
    are in ``summary.json``)."""
    lines = [
        f"{summary['name']} ({summary['layout']}): {summary['images']} images, {summary['patients']} patients, "
        f"{summary['images_with_masks']} with masks",
        "",
    ]
    width = max([len(c) for c in summary["per_class"]] + [len("images_with_masks")])
    lines.append(f"{'class':<{width}} " + " ".join(f"{s:>10}" for s in (*SECTIONS, "total")))
    for c, counts in summary["per_class"].items():
        lines.append(f"{c:<{width}} " + " ".join(f"{counts[s]:>10}" for s in (*SECTIONS, "total")))
    for key in ("images", "patients", "images_with_masks"):
        lines.append(f"{key:<{width}} " + " ".join(f"{summary['per_split'][s][key]:>10}" for s in SECTIONS))
    dup = summary["duplicates"]
    lines += [
        "",
        f"exact duplicates: {dup['groups']} group(s), {dup['images_removed']} image(s) removed, "
        f"{dup['groups_with_conflicting_labels']} with conflicting labels, {dup['patient_merges']} patient "
        "merge(s)",
    ]
    if summary.get("cache"):
        c = summary["cache"]
        lines.append(f"cache: {c['dir']} ({c['written']} written, {c['reused']} reused)")
    skipped = summary["skipped"]
    lines += ["", f"left out: {len(skipped) or 'nothing'}"]
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    kinds = sorted(summary["skipped_by_kind"], key=lambda k: rank.get(k, len(rank)))
    for kind in kinds:
        items = [s for s in skipped if s["kind"] == kind]
        lines.append(f"  {kind}: {len(items)}")
        lines += [f"    - {s['item']}: {s['reason']}" for s in items[:per_kind]]
        if len(items) > per_kind:
            lines.append(f"    ... {len(items) - per_kind} more in summary.json")
    lines += [f"note: {n}" for n in summary["notes"]]
    if summary["train_command"]:
        lines += ["", f"classes: {summary['class_names']}"]
        if summary.get("model_classes"):
            lines.append(f"  {summary['model_classes']}")
        lines += ["", "train with:", "  " + summary["train_command"]]
    else:
        lines += ["", "no labels: the datalist serves self-supervised pretraining only"]
    return "\n".join(lines)
