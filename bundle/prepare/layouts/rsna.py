"""``rsna-pneumonia``: RSNA Pneumonia Detection Challenge (Kaggle, stage 2).

``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``, one row per box, empty box when Target is
0) gives the boxes, kept in each entry as ``boxes`` ([x, y, width, height] in pixels of the image the entry
points at); ``stage_2_detailed_class_info.csv`` (``patientId,class``) gives the three classes ``Normal``,
``No Lung Opacity / Not Normal`` and ``Lung Opacity``. Images are ``stage_2_train_images/<patientId>.dcm``.
The challenge's ``patientId`` names one image; it is the patient id here, as in the DICOM PatientID tag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import is_dicom_file, iter_files, read_csv, row_ref
from ..headers import read_headers
from ..labels import assign_classes, parse_mapping
from ..records import PrepareError, Scan, Skip

NAME = "rsna-pneumonia"
HELP = "RSNA Pneumonia Detection Challenge: DICOMs + stage_2_train_labels.csv (boxes) + detailed class info"
SINGLE_LABEL = True
OFFICIAL_TEST = None

TARGET_CLASSES = ("no_pneumonia", "pneumonia")
DETAILED_CLASSES = ("normal", "no_lung_opacity_not_normal", "lung_opacity")
BOX_COLUMNS = ("x", "y", "width", "height")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument("--labels-csv", default="stage_2_train_labels.csv", help="box file (default: %(default)s)")
    p.add_argument(
        "--class-info-csv", default="stage_2_detailed_class_info.csv", help="three-class file (default: %(default)s)"
    )
    p.add_argument("--images", default="stage_2_train_images", help="DICOM folder (default: %(default)s)")
    p.add_argument(
        "--classes-from",
        choices=("detailed", "target"),
        default="detailed",
        help="detailed: normal / no_lung_opacity_not_normal / lung_opacity (class info file); "
        "target: no_pneumonia / pneumonia from Target (default: %(default)s)",
    )


def _boxes(csv_path: Path) -> tuple[dict[str, dict], list[Skip]]:
    """patientId -> {"line", "target", "boxes"} from the box file; bad rows reported."""
    found: dict[str, dict] = {}
    skipped = []
    for line, row in read_csv(csv_path, ("patientId", *BOX_COLUMNS, "Target")):
        pid, where = row["patientId"], row_ref(csv_path, line)
        if row["Target"] not in ("0", "1"):
            skipped.append(Skip(where, f"Target must be 0 or 1, got {row['Target']!r}", "bad_row"))
            continue
        target = int(row["Target"])
        item = found.setdefault(pid, {"line": line, "target": target, "boxes": []})
        if item["target"] != target:
            item["conflict"] = where
        if target == 1:
            try:
                box = [float(row[c]) for c in BOX_COLUMNS]
            except ValueError:
                skipped.append(
                    Skip(where, "Target 1 with a missing or non-numeric box: box left out, image kept", "bad_row")
                )
                continue
            item["boxes"].append(box)
    return found, skipped


def _class_info(csv_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """patientId -> class text; and patientId -> where two rows disagree."""
    classes, conflicts = {}, {}
    for line, row in read_csv(csv_path, ("patientId", "class")):
        pid = row["patientId"]
        if pid in classes and classes[pid] != row["class"]:
            conflicts[pid] = row_ref(csv_path, line)
        classes.setdefault(pid, row["class"])
    return classes, conflicts


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every labelled patientId whose DICOM exists; boxes attached."""
    src = Path(args.src)
    labels_csv, info_csv, image_dir = src / args.labels_csv, src / args.class_info_csv, src / args.images
    if not image_dir.is_dir():
        raise PrepareError(f"DICOM folder not found: {image_dir} (set --images)")
    if args.classes_from == "detailed" and not info_csv.is_file():
        raise PrepareError(f"{info_csv} not found: set --class-info-csv, or use --classes-from target")
    boxes, skipped = _boxes(labels_csv)
    classes, conflicts = _class_info(info_csv) if args.classes_from == "detailed" else ({}, {})
    files = iter_files(image_dir, args.exclude)
    is_dicom = {f: is_dicom_file(f) for f in files}
    dicoms = {f.stem: f for f in files if is_dicom[f]}
    skipped += [Skip(str(f), "not a DICOM file", "not_dicom") for f in files if not is_dicom[f]]
    entries = []
    for pid, item in boxes.items():
        where = row_ref(labels_csv, item["line"])
        if "conflict" in item:
            skipped.append(Skip(where, f"rows for {pid} disagree on Target (see {item['conflict']})", "bad_row"))
            continue
        if pid not in dicoms:
            skipped.append(Skip(where, f"image '{args.images}/{pid}.dcm' not found", "missing_file"))
            continue
        if args.classes_from == "detailed":
            if pid in conflicts:
                skipped.append(Skip(conflicts[pid], f"rows for {pid} give different classes", "bad_row"))
                continue
            if pid not in classes:
                skipped.append(Skip(where, f"{pid} has no row in {info_csv.name}", "no_label"))
                continue
            cls = classes[pid]
        else:
            cls = TARGET_CLASSES[item["target"]]
        entries.append(
            {
                "image": str(dicoms[pid]),
                "_class": cls,
                "patient": pid,
                "boxes": item["boxes"],
                "box_format": "xywh",
                "target": item["target"],
            }
        )
    skipped += [
        Skip(str(f), f"no row in {labels_csv.name}", "no_label") for pid, f in dicoms.items() if pid not in boxes
    ]
    headers = read_headers([e["image"] for e in entries], ("ViewPosition",), args.workers)
    for e, h in zip(entries, headers):
        if isinstance(h, dict) and h["ViewPosition"]:
            e["view"] = h["ViewPosition"]
    entries, class_names, filtered = assign_classes(
        entries, args.classes, parse_mapping(args.class_map, "--class-map"), DETAILED_CLASSES + TARGET_CLASSES
    )
    return Scan(args.name or "rsna-pneumonia", class_names, False, entries, skipped + filtered)
