"""``chexpert``: CheXpert or CheXpert-v1.0-small (``train.csv``, ``valid.csv``).

Multi-label over the 14 observation columns (``No Finding`` ... ``Support Devices``): ``1.0`` positive,
``0.0`` or blank negative, ``-1.0`` uncertain, resolved by ``--policy``: ``zeros`` (uncertain = 0), ``ones``
(uncertain = 1) or ``ignore`` (images with an uncertain value in a used class are left out, listed in the
summary). ``Path`` (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) is resolved against
the source folder or its parent; the patient is the ``patientNNNNN`` part. Frontal views by default.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..files import image_files, iter_files, read_csv, row_ref
from ..labels import class_key, select_findings
from ..records import PrepareError, Scan, Skip

NAME = "chexpert"
HELP = "CheXpert / CheXpert-small CSVs: frontal/lateral, uncertain labels by --policy zeros|ones|ignore"
SINGLE_LABEL = False
OFFICIAL_TEST = "the images of valid.csv (the radiologist-labelled validation set)"

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
PATIENT = re.compile(r"(patient\d+)")
VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "": 0, "-1.0": -1, "-1": -1}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument("--csv", nargs="+", help="label files (default: train.csv and valid.csv in --src)")
    p.add_argument(
        "--policy",
        choices=("zeros", "ones", "ignore"),
        default="zeros",
        help="uncertain (-1) labels: zeros, ones, or ignore = leave such images out (default: zeros)",
    )
    p.add_argument(
        "--views",
        nargs="+",
        choices=("frontal", "lateral"),
        default=["frontal"],
        help="Frontal/Lateral values kept (default: frontal)",
    )
    p.add_argument(
        "--findings",
        nargs="+",
        help="observations used as classes (default: all 14), e.g. the "
        "competition five: Atelectasis Cardiomegaly Consolidation Edema 'Pleural Effusion'",
    )


def _resolve(src: Path, path: str) -> Path | None:
    """``Path`` starts with the dataset folder's own name: try it under --src, under its parent, and without
    its first part."""
    parts = Path(path).parts
    for candidate in (src / path, src.parent / path, src.joinpath(*parts[1:]) if len(parts) > 1 else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _labels(row: dict, findings: list[str], policy: str) -> tuple[list[int] | None, list[str], str | None]:
    """(0/1 labels, uncertain findings, problem) for one row."""
    values, uncertain = [], []
    for f in findings:
        v = VALUES.get(row[f])
        if v is None:
            return None, [], f"'{f}' must be 1.0, 0.0, -1.0 or blank, got {row[f]!r}"
        if v == -1:
            uncertain.append(f)
            v = 1 if policy == "ones" else 0
        values.append(v)
    return values, uncertain, None


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every row of the label files with an existing image of a kept view."""
    src = Path(args.src)
    csvs = (
        [Path(c) if Path(c).is_absolute() else src / c for c in args.csv]
        if args.csv
        else [src / n for n in ("train.csv", "valid.csv") if (src / n).is_file()]
    )
    if not csvs:
        raise PrepareError(f"no train.csv or valid.csv in {src}; name the label files with --csv")
    findings = select_findings(OBSERVATIONS, args.findings)
    views = {v.lower() for v in args.views}
    entries, skipped, no_patient, listed = [], [], 0, set()
    for csv_path in csvs:
        for line, row in read_csv(csv_path, ("Path", "Frontal/Lateral", *findings)):
            where = row_ref(csv_path, line)
            parts = Path(row["Path"]).parts
            listed.update((parts, parts[1:]))  # Path starts with the dataset folder, which --src may or may not be
            if row["Frontal/Lateral"].lower() not in views:
                skipped.append(
                    Skip(where, f"'{row['Frontal/Lateral']}' view not in --views {sorted(views)}", "filtered")
                )
                continue
            labels, uncertain, problem = _labels(row, findings, args.policy)
            if problem:
                skipped.append(Skip(where, problem, "bad_row"))
                continue
            if uncertain and args.policy == "ignore":
                skipped.append(Skip(where, f"uncertain {uncertain} (--policy ignore)", "uncertain"))
                continue
            image = _resolve(src, row["Path"])
            if image is None:
                skipped.append(
                    Skip(where, f"image '{row['Path']}' not found under --src or its parent", "missing_file")
                )
                continue
            entry = {"image": str(image), "label": labels}
            patient = PATIENT.search(row["Path"])
            if patient:
                entry["patient"] = patient.group(1)
            else:
                no_patient += 1
            entry["view"] = row.get("AP/PA") or row["Frontal/Lateral"]
            if uncertain:
                entry["uncertain"] = [class_key(f) for f in uncertain]
            if csv_path.name == "valid.csv":
                entry["_official"] = "test"
            entries.append(entry)
    skipped += [
        Skip(str(f), f"not listed in {', '.join(c.name for c in csvs)}", "no_label")
        for f in image_files(iter_files(src, args.exclude))
        if f.relative_to(src).parts not in listed
    ]
    notes = [f"{no_patient} image(s) without patientNNNNN in their path: one patient per image"] if no_patient else []
    return Scan(args.name or "chexpert", [class_key(f) for f in findings], True, entries, skipped, notes)
