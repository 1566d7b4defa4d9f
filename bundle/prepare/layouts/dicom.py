"""``dicom``: any folder of DICOM files (a hospital export, a PACS query result).

The patient is the PatientID tag (else the study); frontal views are kept by ViewPosition (PA, AP) and
radiographs by Modality (CR, DX). Labels, where given, come from a CSV whose ``--key-column`` matches the
DICOM tag ``--key-tag`` (AccessionNumber by default): one class per row from ``--label-column``, or
multi-label 0/1 columns with ``--label-columns``. Without ``--labels`` the datalist is unlabelled, for
self-supervised pretraining.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import is_dicom_file, iter_files, read_csv, row_ref
from ..headers import read_headers
from ..labels import assign_classes, class_key, parse_mapping
from ..records import PrepareError, Scan, Skip

NAME = "dicom"
HELP = "any folder of DICOM files: patient from PatientID, frontal views by ViewPosition, labels from a CSV"
SINGLE_LABEL = True
OFFICIAL_TEST = None

BINARY = {"1": 1, "1.0": 1, "true": 1, "yes": 1, "0": 0, "0.0": 0, "false": 0, "no": 0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument("--labels", help="CSV with one row per key (default: no labels)")
    p.add_argument(
        "--key-tag",
        default="AccessionNumber",
        help="DICOM keyword matched to the CSV, e.g. AccessionNumber, StudyInstanceUID, SOPInstanceUID, "
        "PatientID (default: %(default)s)",
    )
    p.add_argument("--key-column", help="CSV column holding the key (default: the --key-tag name)")
    p.add_argument("--label-column", default="label", help="CSV column with the class name (default: %(default)s)")
    p.add_argument(
        "--label-columns",
        nargs="+",
        metavar="COLUMN",
        help="multi-label instead: CSV columns with 0/1 values, one class each",
    )
    p.add_argument("--views", nargs="+", default=["PA", "AP"], help="ViewPosition values kept (default: PA AP)")
    p.add_argument("--keep-unknown-view", action="store_true", help="also keep images without ViewPosition")
    p.add_argument(
        "--modalities", nargs="+", default=["CR", "DX"], help="Modality values kept, or 'all' (default: CR DX)"
    )


def _read_labels(args: argparse.Namespace, path: Path) -> tuple[dict[str, tuple[int, object]], list[Skip]]:
    """key -> (line, class text or 0/1 list); rows with a bad value or a key given twice differently reported."""
    key_col = args.key_column or args.key_tag
    value_cols = args.label_columns or [args.label_column]
    labels: dict[str, tuple[int, object]] = {}
    conflicts: set[str] = set()
    skipped = []
    for line, row in read_csv(path, (key_col, *value_cols)):
        where, key = row_ref(path, line), row[key_col]
        if not key:
            skipped.append(Skip(where, f"empty {key_col}", "bad_row"))
            continue
        if args.label_columns:
            values = [BINARY.get(row[c].lower()) for c in value_cols]
            if None in values:
                skipped.append(Skip(where, f"label columns must be 0/1, got {[row[c] for c in value_cols]}", "bad_row"))
                continue
            value: object = values
        else:
            if not row[args.label_column]:
                skipped.append(Skip(where, f"empty '{args.label_column}'", "bad_row"))
                continue
            value = row[args.label_column]
        if key in labels and labels[key][1] != value:
            skipped.append(
                Skip(
                    where,
                    f"{key_col} '{key}' given a different label on {row_ref(path, labels[key][0])}" "; both left out",
                    "bad_row",
                )
            )
            conflicts.add(key)
        labels.setdefault(key, (line, value))
    return {k: v for k, v in labels.items() if k not in conflicts}, skipped


def _check_key_tag(keyword: str) -> None:
    """An unknown keyword would make every file look unreadable: name the option instead."""
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise PrepareError(
            f"--key-tag {keyword!r} is not a DICOM keyword; use one such as AccessionNumber, StudyInstanceUID, "
            "SOPInstanceUID or PatientID (spelled as in the DICOM standard, case-sensitive)"
        )


def _keep(h: dict[str, str], args: argparse.Namespace) -> str | None:
    """Why a header is filtered out, or None to keep it."""
    modalities = {m.upper() for m in args.modalities}
    if "ALL" not in modalities and h["Modality"] and h["Modality"].upper() not in modalities:
        return f"Modality '{h['Modality']}' not in --modalities {sorted(modalities)}"
    view = h["ViewPosition"].upper()
    if not view and not args.keep_unknown_view:
        return "no ViewPosition (add --keep-unknown-view to keep such images)"
    if view and view not in {v.upper() for v in args.views}:
        return f"ViewPosition '{view}' not in --views {args.views}"
    return None


def _labels_path(args: argparse.Namespace, src: Path) -> Path | None:
    """The labels CSV as given (absolute, or relative to the working folder), else inside --src; None without."""
    if not args.labels:
        return None
    path = Path(args.labels) if Path(args.labels).is_file() else src / args.labels
    return path.absolute()


def _dicom_files(src: Path, args: argparse.Namespace, labels_path: Path | None) -> tuple[list[Path], list[Skip]]:
    """The DICOM files under ``src`` (the labels CSV left out), and the other files as skipped."""
    files, others = [], []
    for f in iter_files(src, args.exclude):
        if labels_path is not None and f.resolve() == labels_path.resolve():
            continue
        (files if is_dicom_file(f) else others).append(f)
    return files, [Skip(str(f), "not a DICOM file", "not_dicom") for f in others]


def _header_fields(h: dict[str, str]) -> dict[str, str]:
    """The patient (PatientID, else the study), view and study of an image, where its header gives them."""
    fields = {}
    if h["PatientID"]:
        fields["patient"] = h["PatientID"]
    elif h["StudyInstanceUID"]:  # a study belongs to one patient
        fields["patient"] = f"study:{h['StudyInstanceUID']}"
    fields.update({k: v for k, v in (("view", h["ViewPosition"]), ("study", h["StudyInstanceUID"])) if v})
    return fields


def _entries(
    files: list[Path],
    headers: list[dict[str, str] | str],
    args: argparse.Namespace,
    labels: dict[str, tuple[int, object]],
    labels_path: Path | None,
) -> tuple[list[dict], list[Skip], set[str], int]:
    """An entry per kept file, the files left out, the keys seen in any readable header, and how many images were
    grouped by study for want of a PatientID."""
    entries, skipped, keys_seen, by_study = [], [], set(), 0
    for f, h in zip(files, headers):
        if isinstance(h, str):
            skipped.append(Skip(str(f), h, "unreadable"))
            continue
        keys_seen.add(h[args.key_tag])
        why = _keep(h, args)
        if why:
            skipped.append(Skip(str(f), why, "filtered"))
            continue
        entry = {"image": str(f), **_header_fields(h)}
        by_study += not h["PatientID"] and bool(h["StudyInstanceUID"])
        if labels_path:
            key = h[args.key_tag]
            if key not in labels:
                skipped.append(
                    Skip(str(f), f"no usable row in {labels_path.name} for {args.key_tag} '{key}'", "no_label")
                )
                continue
            entry["label" if args.label_columns else "_class"] = labels[key][1]
        entries.append(entry)
    return entries, skipped, keys_seen, by_study


def _classes(
    args: argparse.Namespace, entries: list[dict], labels_path: Path | None
) -> tuple[list[dict], list[str], bool, list[Skip], list[str]]:
    """Entries with their class, the class names, whether multi-label, the entries filtered out, and notes."""
    if args.label_columns:
        return entries, [class_key(c) for c in args.label_columns], True, [], []
    if labels_path:
        entries, class_names, filtered = assign_classes(
            entries, args.classes, parse_mapping(args.class_map, "--class-map")
        )
        return entries, class_names, False, filtered, []
    return entries, [], False, [], ["no --labels: unlabelled datalist, for self-supervised pretraining"]


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every readable frontal radiograph (with a label row, when labels are given)."""
    src = Path(args.src)
    _check_key_tag(args.key_tag)
    labels_path = _labels_path(args, src)
    labels, skipped = _read_labels(args, labels_path) if labels_path else ({}, [])
    files, not_dicom = _dicom_files(src, args, labels_path)
    skipped += not_dicom
    if not files:
        raise PrepareError(f"no DICOM file under {src}")
    tags = list(dict.fromkeys(("PatientID", "StudyInstanceUID", "ViewPosition", "Modality", args.key_tag)))
    headers = read_headers([str(f) for f in files], tags, args.workers)
    entries, left_out, keys_seen, by_study = _entries(files, headers, args, labels, labels_path)
    skipped += left_out
    skipped += [
        Skip(row_ref(labels_path, line), f"no DICOM file with {args.key_tag} '{key}' under --src", "missing_file")
        for key, (line, _) in labels.items()
        if key not in keys_seen
    ]
    notes = [f"{by_study} image(s) without PatientID: grouped by StudyInstanceUID"] if by_study else []
    entries, class_names, multi, filtered, class_notes = _classes(args, entries, labels_path)
    skipped += filtered
    notes += class_notes
    return Scan(args.name or f"dicom-{src.name}", class_names, multi, entries, skipped, notes)
