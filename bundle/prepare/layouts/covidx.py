"""``covidx``: COVIDx CXR label files (``train.txt``, ``val.txt``, ``test.txt``, or ``train_COVIDx9A.txt``...).

Each line is ``patient_id filename label source`` separated by spaces; the image is looked up in the folder
named after the file's split (``train/``, ``val/``, ``test/``), else anywhere under the source folder. Labels
are kept as the file spells them (``positive``/``negative``, or ``normal``/``pneumonia``/``COVID-19``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import find_file, image_files, index_by_name, iter_files, read_text, row_ref
from ..labels import assign_classes, parse_mapping
from ..records import PrepareError, Scan, Skip

NAME = "covidx"
HELP = "COVIDx CXR label files (patient_id filename label source)"
SINGLE_LABEL = True
OFFICIAL_TEST = "the images listed in the test label file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this layout."""
    p.add_argument(
        "--label-files",
        nargs="+",
        metavar="TXT",
        help="label files (default: the *.txt files in --src whose name contains train, val or test)",
    )


def _split_of(label_file: Path) -> str:
    stem = label_file.stem.lower()
    return "test" if "test" in stem else "val" if "val" in stem else "train"


def _label_files(src: Path, given: list[str] | None) -> list[Path]:
    if given:
        files = [Path(f) if Path(f).is_absolute() else src / f for f in given]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise PrepareError(f"label file(s) not found: {', '.join(missing)}")
        return files
    files = sorted(f for f in src.glob("*.txt") if any(k in f.stem.lower() for k in ("train", "val", "test")))
    if not files:
        raise PrepareError(f"no COVIDx label file (train.txt, test.txt, ...) in {src}; name them with --label-files")
    return files


def scan(args: argparse.Namespace) -> Scan:
    """Entries for every line of the label files whose image exists."""
    src = Path(args.src)
    files = iter_files(src, args.exclude)
    index = index_by_name(files)
    label_files = _label_files(src, args.label_files)
    entries, skipped, listed = [], [], set()
    for label_file in label_files:
        split = _split_of(label_file)
        for line_no, line in enumerate(read_text(label_file).split("\n"), start=1):
            tokens = line.split()
            if not tokens:
                continue
            where = row_ref(label_file, line_no)
            if len(tokens) < 4:
                skipped.append(
                    Skip(where, f"expected 'patient_id filename label source', got {line.strip()!r}", "bad_row")
                )
                continue
            # File names may contain spaces: everything between the patient id and the last two fields.
            patient, filename, label, source = tokens[0], " ".join(tokens[1:-2]), tokens[-2], tokens[-1]
            image = find_file(filename, [src / split / filename, src / filename], index)
            listed.add(image)
            if image is None:
                skipped.append(
                    Skip(where, f"image '{filename}' not found in {split}/ or elsewhere under --src", "missing_file")
                )
                continue
            entry = {"image": str(image), "_class": label, "patient": patient, "source": source}
            if split == "test":
                entry["_official"] = "test"
            entries.append(entry)
    names = ", ".join(f.name for f in label_files)
    skipped += [Skip(str(f), f"not listed in {names}", "no_label") for f in image_files(files) if f not in listed]
    entries, class_names, filtered = assign_classes(entries, args.classes, parse_mapping(args.class_map, "--class-map"))
    return Scan(args.name or f"covidx-{src.name}", class_names, False, entries, skipped + filtered)
