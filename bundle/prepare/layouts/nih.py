"""``nih``: NIH ChestX-ray14 (``Data_Entry_2017.csv`` or ``Data_Entry_2017_v2020.csv``, ``images*/``).

Multi-label: one 0/1 value per finding of ``Finding Labels`` (``Cardiomegaly|Effusion``; ``No Finding`` is all
zeros). The patient is ``Patient ID``, the view ``View Position``. Images are found by name anywhere under the
source folder (``images/`` or the Kaggle ``images_001/images/``...). ``test_list.txt`` (with
``--official-test``) gives the official patient-wise test set; ``BBox_List_2017.csv``, where present, adds
``boxes`` and ``box_labels``.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from ..files import find_file, image_files, index_by_name, iter_files, read_csv, read_text, row_ref
from ..labels import class_key, select_findings
from ..records import PrepareError, Scan, Skip

NAME = "nih"
HELP = "NIH ChestX-ray14: Data_Entry_2017.csv, multi-label findings, official train/test lists"
SINGLE_LABEL = False
OFFICIAL_TEST = "the images in test_list.txt"

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument("--csv", help=f"label file (default: the first of {', '.join(CSV_NAMES)} in --src)")
    p.add_argument("--test-list", default="test_list.txt", help="official test list (default: %(default)s)")
    p.add_argument("--bbox-csv", default="BBox_List_2017.csv", help="boxes, used where present (default: %(default)s)")
    p.add_argument("--views", nargs="+", default=["PA", "AP"], help="View Position values kept (default: PA AP)")
    p.add_argument("--findings", nargs="+", help="findings used as classes (default: all 14)")


def _csv_path(src: Path, given: str | None) -> Path:
    if given:
        return Path(given) if Path(given).is_absolute() else src / given
    for name in CSV_NAMES:
        if (src / name).is_file():
            return src / name
    raise PrepareError(f"no {' or '.join(CSV_NAMES)} in {src}; name it with --csv")


def _boxes(path: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """Image name -> [(finding, [x, y, w, h])]; the header ``Bbox [x,y,w,h]`` spans four columns."""
    out: dict[str, list] = {}
    if not path.is_file():
        return out
    try:
        rows = list(csv.reader(io.StringIO(read_text(path))))
    except csv.Error as e:
        raise PrepareError(f"{path}: not a CSV file ({e}); set --bbox-csv to the box list") from None
    for row in rows[1:]:
        try:
            out.setdefault(row[0], []).append((row[1], [float(v) for v in row[2:6]]))
        except (IndexError, ValueError):
            continue  # boxes are extras: a bad box row does not remove the image
    return out


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every row of the label file with an existing frontal image."""
    src = Path(args.src)
    csv_path = _csv_path(src, args.csv)
    columns = ("Image Index", "Finding Labels", "Patient ID", "View Position")
    rows = list(read_csv(csv_path, columns))
    seen = {f for _, r in rows for f in r["Finding Labels"].split("|") if f and f != NO_FINDING}
    available = list(FINDINGS) + sorted(seen - set(FINDINGS))  # canonical order, then any others
    findings = select_findings(available, args.findings)
    test_list = src / args.test_list
    official = set(read_text(test_list).split()) if test_list.is_file() else set()
    if getattr(args, "official_test", False) and not official:
        raise PrepareError(f"--official-test: {test_list} not found or empty")
    boxes = _boxes(src / args.bbox_csv)
    files = iter_files(src, args.exclude)
    index = index_by_name(files)
    views = {v.upper() for v in args.views}
    entries, skipped = [], []
    for line, row in rows:
        where, name = row_ref(csv_path, line), row["Image Index"]
        view = row["View Position"].upper()
        if view not in views:
            skipped.append(Skip(where, f"view '{view}' not in --views {sorted(views)}", "filtered"))
            continue
        image = find_file(name, [src / "images" / name], index)
        if image is None:
            skipped.append(Skip(where, f"image '{name}' not found under --src", "missing_file"))
            continue
        present = set(row["Finding Labels"].split("|")) - {NO_FINDING, ""}
        entry = {
            "image": str(image),
            "label": [int(f in present) for f in findings],
            "findings": sorted(present),
            "patient": row["Patient ID"],
            "view": view,
        }
        if row.get("Follow-up #", "").isdigit():
            entry["follow_up"] = int(row["Follow-up #"])
        if name in boxes:
            entry["boxes"] = [b for _, b in boxes[name]]
            entry["box_labels"] = [f for f, _ in boxes[name]]
            entry["box_format"] = "xywh"
        if name in official:
            entry["_official"] = "test"
        entries.append(entry)
    listed = {row["Image Index"] for _, row in rows}
    skipped += [
        Skip(str(f), f"not listed in {csv_path.name}", "no_label") for f in image_files(files) if f.name not in listed
    ]
    return Scan(args.name or "nih-chestxray14", [class_key(f) for f in findings], True, entries, skipped)
