"""``folders``: one folder per class (Kermany pediatric pneumonia, COVID-19 Radiography Database, COVID-QU-Ex).

The class is the folder holding the image, or the folder above it when that one is called ``images``
(``COVID/images/COVID-1.png``); a lung mask with the image's name in a sibling ``masks`` / ``lung masks``
folder is paired with it. Split folders above the class folders (``train``, ``test``, ``Val``) are ignored,
except that ``--official-test`` keeps images under ``test`` as the test section.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from ...data.readers import is_image_file
from ..files import iter_files, rel
from ..labels import assign_classes, class_key, parse_mapping
from ..records import PrepareError, Scan, Skip

NAME = "folders"
HELP = "one folder per class (Kermany, COVID-19 Radiography Database, COVID-QU-Ex), masks paired by file name"
SINGLE_LABEL = True
OFFICIAL_TEST = "images under a folder named 'test' (Kermany chest_xray/test, COVID-QU-Ex Test)"

MASK_DIRS = ("masks", "lung masks", "lung_masks", "mask")
# COVID-QU-Ex also has infection masks: not lung masks, so they are neither images nor paired.
OTHER_MASK_DIRS = ("infection masks", "infection_masks")
NOT_CLASSES = {"train", "training", "test", "testing", "val", "valid", "validation", "images"}
TEST_DIRS = {"test", "testing"}
# Kermany: person1_bacteria_1.jpeg, IM-0115-0001.jpeg, NORMAL2-IM-0927-0001.jpeg (patient, then image number).
KERMANY_PATIENT = (r"^(person\d+)_", r"^((?:NORMAL2-)?IM-\d+)-\d+")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument(
        "--patient-regex",
        help="regular expression on the file name, first group = patient id "
        "(default: Kermany names personN_*, IM-NNNN-*, NORMAL2-IM-NNNN-*; else one patient per image)",
    )
    p.add_argument(
        "--name-class",
        nargs="+",
        metavar="REGEX=CLASS",
        default=[],
        help="class from the file name where REGEX matches, e.g. Kermany subtypes "
        "'_bacteria_=bacterial_pneumonia' '_virus_=viral_pneumonia'",
    )
    p.add_argument(
        "--mask-dirs",
        nargs="+",
        default=list(MASK_DIRS),
        metavar="NAME",
        help="names of mask folders beside 'images' or inside a class folder (default: %(default)s)",
    )


def _name_rules(pairs: list[str]) -> list[tuple[re.Pattern, str]]:
    rules = []
    for pair in pairs:
        regex, sep, cls = pair.rpartition("=")
        if not sep or not regex or not class_key(cls):
            raise PrepareError(f"--name-class: expected REGEX=CLASS, got {pair!r}")
        rules.append((_compile(regex, "--name-class"), cls))
    return rules


def _compile(regex: str, option: str) -> re.Pattern:
    """``regex`` compiled, or a message naming the option and what is wrong with it."""
    try:
        return re.compile(regex)
    except re.error as e:
        raise PrepareError(f"{option}: {regex!r} is not a valid regular expression ({e})") from None


def _patient(name: str, patterns: list[re.Pattern]) -> str | None:
    for pattern in patterns:
        m = pattern.search(name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return None


def _mask_index(masks: list[Path]) -> dict[tuple[Path, str], Path]:
    """(mask folder, image stem) -> mask; ``x_mask.png`` (Shenzhen/Montgomery style) also pairs with ``x``."""
    index = {}
    for m in masks:
        stem = m.name[: -len(".nii.gz")] if m.name.lower().endswith(".nii.gz") else m.stem
        index.setdefault((m.parent, stem.lower()), m)
        if stem.lower().endswith("_mask"):
            index.setdefault((m.parent, stem.lower()[: -len("_mask")]), m)
    return index


def _patient_patterns(args: argparse.Namespace) -> list[re.Pattern]:
    """``--patient-regex``, or Kermany's file names by default."""
    if args.patient_regex:
        return [_compile(args.patient_regex, "--patient-regex")]
    return [re.compile(p) for p in KERMANY_PATIENT]


def _sort_files(
    src: Path, args: argparse.Namespace, mask_names: set[str]
) -> tuple[list[Path], list[Path], int, Counter]:
    """The images and lung masks under ``src``, the number of infection masks, and the other files by suffix."""
    images, masks, other_masks, non_images = [], [], 0, Counter()
    for f in iter_files(src, args.exclude):
        dirs = [d.lower() for d in f.relative_to(src).parts[:-1]]
        if any(d in mask_names for d in dirs):
            masks.append(f)
        elif any(d in OTHER_MASK_DIRS for d in dirs):
            other_masks += 1
        elif is_image_file(f):
            images.append(f)
        else:
            non_images[f.suffix.lower()] += 1
    return images, masks, other_masks, non_images


def _entries(
    src: Path,
    images: list[Path],
    masks: list[Path],
    mask_names: set[str],
    patterns: list[re.Pattern],
    name_rules: list[tuple[re.Pattern, str]],
) -> tuple[list[dict], list[Skip]]:
    """An entry per image in a class folder, with its patient and mask where found; the images and masks left out."""
    mask_index = _mask_index(masks)
    entries, skipped, used_masks, mask_dirs_of = [], [], set(), {}
    for f in images:
        class_dir = f.parent.parent if f.parent.name.lower() == "images" else f.parent
        if class_dir == src or class_dir.name.lower() in NOT_CLASSES:
            skipped.append(
                Skip(str(f), f"not inside a class folder (found in '{rel(f.parent, src) or '.'}')", "no_class")
            )
            continue
        cls = next((c for rule, c in name_rules if rule.search(f.name)), class_dir.name)
        entry = {"image": str(f), "_class": cls}
        patient = _patient(f.name, patterns)
        if patient:
            entry["patient"] = patient
        if class_dir not in mask_dirs_of:  # masks sit beside "images", or inside the class folder
            mask_dirs_of[class_dir] = [d for d in class_dir.iterdir() if d.is_dir() and d.name.lower() in mask_names]
        mask = _paired_mask(f, mask_dirs_of[class_dir], mask_index)
        if mask is not None:
            entry["mask"] = str(mask)
            used_masks.add(mask)
        if any(d.lower() in TEST_DIRS for d in f.relative_to(src).parts[:-1]):
            entry["_official"] = "test"
        entries.append(entry)
    skipped += [
        Skip(str(m), "mask with no image of the same name in the class folder", "unpaired_mask")
        for m in masks
        if m not in used_masks
    ]
    return entries, skipped


def _paired_mask(image: Path, mask_dirs: list[Path], mask_index: dict[tuple[Path, str], Path]) -> Path | None:
    """The mask with the image's name in one of ``mask_dirs``, if any."""
    stem = image.name[: -len(".nii.gz")] if image.name.lower().endswith(".nii.gz") else image.stem
    return next((mask_index[(d, stem.lower())] for d in mask_dirs if (d, stem.lower()) in mask_index), None)


def _notes(other_masks: int, non_images: Counter, entries: list[dict]) -> list[str]:
    """What the summary says about files not used and images without a patient id."""
    notes = []
    if other_masks:
        notes.append(f"{other_masks} file(s) in infection-mask folders not used (they are not lung masks)")
    if non_images:
        counts = ", ".join(f"{n} {suffix}" for suffix, n in sorted(non_images.items()))
        notes.append(f"files that are not images ignored: {counts}")
    without_patient = sum("patient" not in e for e in entries)
    if without_patient:
        notes.append(f"{without_patient} image(s) without a patient id in the file name: one patient per image")
    return notes


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every image in a class folder under ``args.src``."""
    src = Path(args.src)
    mask_names = {d.lower() for d in args.mask_dirs}
    patterns = _patient_patterns(args)
    name_rules = _name_rules(args.name_class)
    images, masks, other_masks, non_images = _sort_files(src, args, mask_names)
    entries, skipped = _entries(src, images, masks, mask_names, patterns, name_rules)
    entries, class_names, filtered = assign_classes(entries, args.classes, parse_mapping(args.class_map, "--class-map"))
    notes = _notes(other_masks, non_images, entries)
    return Scan(args.name or f"folders-{src.name}", class_names, False, entries, skipped + filtered, notes)
