"""``siim-covid``: SIIM-FISABIO-RSNA COVID-19 Detection (Kaggle).

``train_study_level.csv`` (``id`` = ``<study>_study`` and one 0/1 column per class: ``Negative for Pneumonia``,
``Typical Appearance``, ``Indeterminate Appearance``, ``Atypical Appearance``) labels every image of the study.
Images are ``train/<StudyInstanceUID>/<SeriesInstanceUID>/<image id>.dcm``; ``train_image_level.csv``
(``id`` = ``<image id>_image``, ``boxes``, ``label``, ``StudyInstanceUID``), where present, joins images to
studies when the folder does not and adds the opacity ``boxes``. The patient is the DICOM PatientID.
"""

from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path

from ..files import image_files, is_dicom_file, iter_files, read_csv, rel, row_ref
from ..headers import read_headers
from ..labels import assign_classes, parse_mapping
from ..records import PrepareError, Scan, Skip

NAME = "siim-covid"
HELP = "SIIM-FISABIO-RSNA COVID-19: study-level labels (4 classes) joined to the image DICOMs"
SINGLE_LABEL = True
OFFICIAL_TEST = None

STUDY_CLASSES = {
    "Negative for Pneumonia": "negative",
    "Typical Appearance": "typical",
    "Indeterminate Appearance": "indeterminate",
    "Atypical Appearance": "atypical",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument("--study-csv", default="train_study_level.csv", help="study labels (default: %(default)s)")
    p.add_argument(
        "--image-csv",
        default="train_image_level.csv",
        help="image-to-study table with boxes, used where present (default: %(default)s)",
    )
    p.add_argument("--images", default="train", help="image folder (default: %(default)s)")


def _study_labels(path: Path) -> tuple[dict[str, tuple[int, str]], list[Skip]]:
    """study id -> (line, class key); rows without exactly one class set are reported."""
    labels, skipped = {}, []
    for line, row in read_csv(path, ("id", *STUDY_CLASSES)):
        set_ = [name for col, name in STUDY_CLASSES.items() if row[col] in ("1", "1.0")]
        if len(set_) != 1:
            skipped.append(
                Skip(row_ref(path, line), f"expected exactly one class set to 1, got {set_ or 'none'}", "bad_row")
            )
            continue
        labels[row["id"].removesuffix("_study")] = (line, set_[0])
    return labels, skipped


def _parse_boxes(text: str) -> list[list[float]]:
    """``"[{'x': 789.3, 'y': 582.4, 'width': 1026.7, 'height': 1917.3}]"`` to [[x, y, w, h]]; blank: []."""
    if not text or text.lower() == "nan":
        return []
    boxes = ast.literal_eval(text)  # Python literal, not JSON (single quotes)
    out = [[float(b[k]) for k in ("x", "y", "width", "height")] for b in boxes]
    if any(not math.isfinite(v) for b in out for v in b):
        raise ValueError("non-finite box value")
    return out


def _image_table(path: Path) -> tuple[dict[str, dict], list[Skip]]:
    """image id -> {"line", "study", "boxes"} from the image-level file, if present."""
    table, skipped = {}, []
    if not path.is_file():
        return table, skipped
    for line, row in read_csv(path, ("id", "boxes", "StudyInstanceUID")):
        item = {"line": line, "study": row["StudyInstanceUID"], "boxes": []}
        try:
            item["boxes"] = _parse_boxes(row["boxes"])
        except (ValueError, SyntaxError, KeyError, TypeError):
            skipped.append(
                Skip(row_ref(path, line), f"unreadable boxes {row['boxes']!r}: boxes left out, image kept", "bad_row")
            )
        table[row["id"].removesuffix("_image")] = item
    return table, skipped


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every image whose study has a label."""
    src = Path(args.src)
    image_dir = src / args.images
    if not image_dir.is_dir():
        raise PrepareError(f"image folder not found: {image_dir} (set --images)")
    study_csv, image_csv = src / args.study_csv, src / args.image_csv
    studies, skipped = _study_labels(study_csv)
    table, bad_boxes = _image_table(image_csv)
    skipped += bad_boxes
    everything = iter_files(image_dir, args.exclude)
    files = image_files(everything)
    skipped += [Skip(str(f), "not an image or DICOM file", "not_image") for f in sorted(set(everything) - set(files))]
    entries, found_studies, found_images = [], set(), set()
    for f in files:
        image_id = f.name.split(".")[0]
        parts = f.relative_to(image_dir).parts
        study = table[image_id]["study"] if image_id in table else parts[0] if len(parts) >= 3 else None
        if study is None:
            skipped.append(
                Skip(
                    str(f),
                    f"study unknown: not in {image_csv.name} and not under " f"{args.images}/<study>/<series>/",
                    "no_label",
                )
            )
            continue
        found_images.add(image_id)
        found_studies.add(study)
        if study not in studies:
            skipped.append(Skip(str(f), f"study {study} has no usable row in {study_csv.name}", "no_label"))
            continue
        entry = {"image": str(f), "_class": studies[study][1], "study": study}
        if table.get(image_id, {}).get("boxes"):
            entry["boxes"], entry["box_format"] = table[image_id]["boxes"], "xywh"
        entries.append(entry)
    skipped += [
        Skip(row_ref(study_csv, line), f"no image of study {s} under {rel(image_dir, src)}/", "missing_file")
        for s, (line, _) in studies.items()
        if s not in found_studies
    ]
    skipped += [
        Skip(row_ref(image_csv, item["line"]), f"image {i} not found under {rel(image_dir, src)}/", "missing_file")
        for i, item in table.items()
        if i not in found_images
    ]
    dicoms = [e for e in entries if is_dicom_file(e["image"])]
    for e, h in zip(dicoms, read_headers([e["image"] for e in dicoms], ("PatientID", "ViewPosition"), args.workers)):
        if isinstance(h, dict):
            e["patient"] = h["PatientID"] or None
            if h["ViewPosition"]:
                e["view"] = h["ViewPosition"]
    without_patient = [e for e in entries if not e.get("patient")]
    for e in without_patient:
        e["patient"] = f"study:{e['study']}"  # a study belongs to one patient
    notes = [f"{len(without_patient)} image(s) without PatientID: grouped by study"] if without_patient else []
    entries, class_names, filtered = assign_classes(
        entries, args.classes, parse_mapping(args.class_map, "--class-map"), tuple(STUDY_CLASSES.values())
    )
    return Scan(args.name or "siim-covid19", class_names, False, entries, skipped + filtered, notes)
