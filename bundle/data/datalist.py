"""Datalists: loading, checking every entry before training, and the splits each workflow trains on.

A datalist is MONAI's decathlon-style JSON: sections ``training`` / ``validation`` / ``test``, each a list of
entries ``{"image", "label" (int, or a list of 0/1 for multi-label), "mask" (optional), "patient" (optional)}``
whose paths are relative to ``dataset_dir``. When ``validation`` or ``test`` is missing, it is split from
``training`` by patient (no patient in two splits), stratified by class and seeded, so that training and
evaluation rebuild the same split from the same arguments. Evaluation (``need_training=False``) also takes a
datalist with only a ``test`` section, e.g. an external collection for a trained model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ..errors import fail
from ..values import (
    Rule,
    as_bool,
    boolean,
    class_names,
    described,
    existing_file,
    existing_folder,
    integer,
    is_number,
    is_true,
    number,
    optional,
    show,
)
from .fingerprints import CACHE_FILE, Fingerprint, FingerprintTable
from .leakage import check_leakage
from .readers import SUPPORTED_SUFFIXES, is_image_file
from .splits import group_by_patient, label_subset, split_by_patient

__all__ = [
    "DatalistError",
    "SECTIONS",
    "load_datalist",
    "check_entries",
    "labels_against_classes",
    "declared_class_names",
    "check_class_names",
    "prepare_splits",
    "pretraining_splits",
    "list_images",
]

SECTIONS = ("training", "validation", "test")
logger = logging.getLogger(__name__)


class DatalistError(ValueError):
    """One or more datalist entries are unusable; ``problems`` lists them, one line per entry."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        # every argument goes to the base class, so pickle and copy can rebuild the error; __str__ gives the message
        super().__init__(source, self.problems)

    def __str__(self) -> str:
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{self.source}: {len(self.problems)} problem(s) found, nothing was trained:\n{lines}"


def _abs(path: str, base: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def load_datalist(datalist: str | os.PathLike, dataset_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """Read a datalist and make ``image``/``mask`` paths absolute (relative ones are under ``dataset_dir``).

    Returns the sections present (at least ``training``), each a list of new entry dicts.
    """
    datalist = str(datalist)
    if not os.path.isfile(datalist):
        raise DatalistError(datalist, ["datalist file not found"])
    try:
        with open(datalist) as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatalistError(datalist, [f"not valid JSON ({e})"]) from None
    if isinstance(content, list):  # a bare list of entries is taken as the training section
        content = {"training": content}
    if not isinstance(content, dict) or not any(isinstance(content.get(s), list) for s in SECTIONS):
        raise DatalistError(datalist, [f"no section among {SECTIONS} holds a list of entries"])
    out: dict[str, list[dict]] = {}
    for section in SECTIONS:
        if section not in content:
            continue
        entries = []
        for i, item in enumerate(content[section]):
            if isinstance(item, str):
                item = {"image": item}
            entry = dict(item) if isinstance(item, dict) else {"image": None, "_bad": f"entry is {type(item).__name__}"}
            entry["_id"] = f"{section}[{i}]"
            for key in ("image", "mask"):
                if isinstance(entry.get(key), str):
                    entry[key] = _abs(entry[key], str(dataset_dir))
            entries.append(entry)
        out[section] = entries
    return out


def declared_class_names(datalist: str | os.PathLike | None) -> list[str] | None:
    """The class names a datalist declares, in its labels' order: its ``class_names`` list, else a decathlon-style
    ``labels`` map (``{"0": "normal", ...}``); None when it declares none or cannot be read (``load_datalist``
    reports that)."""
    if not datalist or not os.path.isfile(datalist):
        return None
    try:
        with open(datalist, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict):
        return None
    names, labels = content.get("class_names"), content.get("labels")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    if isinstance(labels, dict) and all(str(k).isdigit() for k in labels):
        return [str(labels[k]) for k in sorted(labels, key=int)]
    return None


def check_class_names(datalist: str | os.PathLike | None, class_names: Sequence[str]) -> None:
    """Stop when the datalist declares other class names, or another order, than the run's ``class_names``.

    The labels are class indices: read in another order, every score of the swapped classes is wrong without a
    word (a COVID-19 AUC of 0.000). The run's names are the model's (evaluation, inference: its recipe) or the
    settings' (training).
    """
    declared = declared_class_names(datalist)
    if declared is None or declared == [str(n) for n in class_names]:
        if declared is None and datalist and os.path.isfile(datalist):
            logger.info("datalist %s declares no class_names: its labels are read as %s", datalist, list(class_names))
        return
    fail(
        f"class_names: the datalist {datalist} declares the classes {declared}, this run has {list(class_names)} "
        "(the weights' recipe or --class_names), so its labels would be read as other classes. Train with "
        f"--class_names '{json.dumps(declared)}', or, for a trained model, rewrite the datalist in the model's "
        f"order (scripts/prepare_dataset.py ... --classes {','.join(map(str, class_names))})"
    )


def _label_problem(label, num_classes: int, multi_label: bool) -> str | None:
    if multi_label:
        if not isinstance(label, (list, tuple)) or len(label) != num_classes:
            return f"multi-label 'label' must be a list of {num_classes} values 0/1, got {label!r}"
        if any(v not in (0, 1) or isinstance(v, float) and not float(v).is_integer() for v in label):
            return f"multi-label 'label' values must be 0 or 1, got {label!r}"
        return None
    if isinstance(label, bool) or not isinstance(label, int):
        return f"'label' must be an integer class index, got {label!r}"
    if not 0 <= label < num_classes:
        return f"label {label} out of range [0, {num_classes - 1}]"
    return None


def labels_against_classes(entries: Sequence[dict], class_names: Sequence[str], multi_label: bool) -> str | None:
    """One sentence when the datalist's labels as a whole do not fit the settings, else None.

    Per-entry checks would report the same mistake once per image (every label a list while ``multi_label`` is
    false, class indices beyond ``class_names``); this names the setting to change instead.
    """
    labels = [e["label"] for e in entries if e.get("label") is not None]
    if not labels:
        return None
    n = len(class_names)
    lists = [lab for lab in labels if isinstance(lab, (list, tuple))]
    ints = [lab for lab in labels if isinstance(lab, int) and not isinstance(lab, bool)]
    if multi_label and len(ints) == len(labels):
        classes = sorted(set(ints))
        return (
            f"multi_label is true, but every label is a single class index (classes {classes}); set multi_label "
            f"false, or give each label as a list of {n} value{'s' if n > 1 else ''} 0/1 (one per class name)"
        )
    if not multi_label and len(lists) == len(labels):
        return "multi_label is false, but every label is a list of 0/1 values; set multi_label true"
    lengths = sorted({len(lab) for lab in lists})
    if multi_label and len(lists) == len(labels) and lengths != [n]:
        return f"labels are lists of {', '.join(map(str, lengths))} values, but class_names has {n} names {list(class_names)}"
    if not multi_label and ints and max(ints) >= n:
        return (
            f"labels go up to class index {max(ints)}, but class_names has {n} names {list(class_names)}; give "
            f"--class_names one name per class ({max(ints) + 1} or more)"
        )
    return None


def _file_problem(path: str, decoded: Mapping[str, Fingerprint | str] | None) -> str | None:
    """Why ``path`` cannot be used: unreadable (when ``decoded``), or missing (without it); None when it can."""
    if decoded is None:
        return None if os.path.isfile(path) else "file not found"
    result = decoded.get(path)
    return result if isinstance(result, str) else None


def _entry_problems(
    entry: dict,
    num_classes: int,
    multi_label: bool,
    require_label: bool,
    decoded: Mapping[str, Fingerprint | str] | None,
) -> list[str]:
    """The problems of one entry; ``decoded`` holds each file's fingerprint or reason (None: existence only)."""
    if "_bad" in entry:
        return [entry["_bad"]]
    image = entry.get("image")
    if not isinstance(image, str) or not image:
        return ["no 'image' path"]
    problems = []
    if "label" in entry and entry["label"] is not None:
        problem = _label_problem(entry["label"], num_classes, multi_label)
        if problem:
            problems.append(problem)
    elif require_label:
        problems.append("no 'label'")
    problem = _file_problem(image, decoded)
    if problem:
        problems.append(f"image {problem}")
    mask = entry.get("mask")
    if mask is not None:
        problem = "'mask' must be a path" if not isinstance(mask, str) else _file_problem(mask, decoded)
        if problem:
            problems.append(f"mask {mask}: {problem}")
        elif decoded is not None:
            shapes = [getattr(decoded.get(p), "shape", None) for p in (image, mask)]
            if None not in shapes and shapes[0] != shapes[1]:
                problems.append(f"mask shape {shapes[1]} differs from image shape {shapes[0]}")
    return problems


# The table that check_entries records fingerprints in when none is given: prepare_splits sets it around the
# checks of its datalist, so that the leakage check reads the hashes of that one decode.
_TABLE: ContextVar[FingerprintTable | None] = ContextVar("fingerprint_table", default=None)


def check_entries(
    entries: Sequence[dict],
    num_classes: int,
    multi_label: bool = False,
    require_label: bool = True,
    read_images: bool = True,
    num_threads: int | None = None,
    table: FingerprintTable | None = None,
) -> list[str]:
    """Return one line per unusable entry: ``"<section>[i] (<image>): <reason>; <reason>"``.

    With ``read_images`` every image and mask file is decoded once (however many entries name it), so that corrupt
    files are found here and not in the middle of an epoch, and its shape and pixel hash are recorded in ``table``
    (default: the one ``prepare_splits`` checks with, else a new one in memory). A file that ``table`` recorded
    before with the same size and mtime is not decoded again; the others are decoded by ``num_threads`` threads
    (default: one per core; processes on 4 cores or more), see ``bundle.data.fingerprints``. Without
    ``read_images`` only the files' existence is checked.
    """
    if not entries:
        return ["datalist has no entries"]
    decoded = None
    if read_images:
        table = table or _TABLE.get() or FingerprintTable()
        files = [f for e in entries for f in (e.get("image"), e.get("mask")) if isinstance(f, str) and f]
        decoded = table.check(files, num_threads)
    lines = []
    for entry in entries:
        problems = _entry_problems(entry, num_classes, multi_label, require_label, decoded)
        if problems:
            name = entry.get("image") if isinstance(entry.get("image"), str) else "?"
            lines.append(f"{entry.get('_id', '?')} ({name}): {'; '.join(problems)}")
    return lines


def _empty_split_message(
    datalist: str,
    sections: dict[str, list[dict]],
    everything: Sequence[dict],
    train: Sequence[dict],
    val: Sequence[dict],
    test: Sequence[dict],
    val_fraction: float,
    test_fraction: float,
    need_training: bool,
) -> str | None:
    """The one sentence for a split that the workflow needs but came out empty; None when all are there."""
    counts = f"{len(everything)} images in {len(group_by_patient(everything))} patients"
    if not need_training:  # evaluation: only the test split matters
        if test:
            return None
        if "test" in sections:
            return f"{datalist}: the 'test' section is empty; list the images to evaluate there"
        if not sections.get("training"):
            return (
                f"{datalist}: no 'test' section and no 'training' images to split a test split from ({counts}); "
                "give the images to evaluate in a 'test' section (evaluation needs no other section)"
            )
        return (
            f"{datalist}: the test split is empty ({counts}, test_fraction={test_fraction}); give the images to "
            "evaluate in a 'test' section, or a test_fraction above 0"
        )
    empty = [
        name for name, part, f in (("validation", val, val_fraction), ("test", test, test_fraction)) if f and not part
    ]
    if empty or not train:
        return (
            f"{datalist}: the {', '.join(empty or ['training'])} split is empty ({counts}); add images or give "
            "the sections in the datalist"
        )
    return None


def _load_checked(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    class_names: Sequence[str],
    multi_label: bool,
    require_label: bool,
    check: bool,
) -> tuple[dict[str, list[dict]], list[dict]]:
    """The datalist's sections and all their entries, every entry checked.

    Raises:
        DatalistError: labels that do not fit ``class_names``, or entries with problems (all of them listed).
    """
    sections = load_datalist(datalist, dataset_dir)
    everything = [e for s in SECTIONS for e in sections.get(s, [])]
    mismatch = labels_against_classes(everything, class_names, multi_label)
    if mismatch:
        raise DatalistError(str(datalist), [mismatch])
    problems = check_entries(everything, len(class_names), multi_label, require_label, read_images=check)
    if problems:
        raise DatalistError(str(datalist), problems)
    return sections, everything


def _split_missing(
    sections: dict[str, list[dict]], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[dict], list[dict], list[dict]]:
    """Training, validation and test: the datalist's own sections, those it lacks split from ``training``."""
    train = sections["training"] if "training" in sections else []
    val, test = sections.get("validation"), sections.get("test")
    if val is None or test is None:
        train, split_val, split_test = split_by_patient(
            train, 0.0 if val is not None else val_fraction, 0.0 if test is not None else test_fraction, seed
        )
        val = val if val is not None else split_val
        test = test if test is not None else split_test
    return train, val, test


def _with_table(table: FingerprintTable, exit_on_error: bool, *args: Any) -> tuple[dict[str, list[dict]], list[dict]]:
    """``_load_checked(*args)`` with its entry check recording in ``table``, which is saved afterwards."""
    token = _TABLE.set(table)
    try:
        return _load_checked(*args)
    except DatalistError as e:
        if exit_on_error:
            fail(str(e), e)
        raise
    finally:
        _TABLE.reset(token)
        table.save()  # the sound files, even when others failed: fixing one file does not cost a full check


def prepare_splits(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    class_names: Sequence[str],
    multi_label: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    label_fraction: float = 1.0,
    require_label: bool = True,
    check: bool = True,
    exit_on_error: bool = True,
    need_training: bool = True,
    allow_split_overlap: bool = False,
    cache_dir: str | os.PathLike | None = None,
    check_overlap: bool = True,
) -> dict[str, list[dict]]:
    """Load, check and split a datalist for a bundle workflow.

    Returns ``{"training", "validation", "test"}``; ``training`` holds ``label_fraction`` of the labelled
    training images. Every problem is reported at once; with ``exit_on_error`` the process stops with that
    message alone (a ``SystemExit``), instead of a traceback from inside the config parser.

    With ``need_training=False`` (evaluation) only the test split must be non-empty: a datalist whose only section
    is ``test`` is accepted (training and validation come back empty). A datalist without a ``test`` section is
    split exactly as with ``need_training=True``, so evaluation sees the test patients that training left out.

    With ``check_overlap`` the final splits are compared for a shared image, patient or picture
    (``bundle.data.leakage``): evaluation stops unless ``allow_split_overlap``, training logs a warning. With
    ``cache_dir`` the files' fingerprints are kept there (``bundle.data.fingerprints.CACHE_FILE``), so that the next
    run decodes only the files that changed.
    """
    multi_label, need_training = as_bool(multi_label, "multi_label"), as_bool(need_training, "need_training")
    allow_split_overlap = as_bool(allow_split_overlap, "allow_split_overlap")
    table = FingerprintTable(os.path.join(cache_dir, CACHE_FILE) if cache_dir else None)
    args = (datalist, dataset_dir, class_names, multi_label, require_label, check)
    sections, everything = _with_table(table, exit_on_error, *args)
    train, val, test = _split_missing(sections, val_fraction, test_fraction, seed)
    message = _empty_split_message(
        str(datalist), sections, everything, train, val, test, val_fraction, test_fraction, need_training
    )
    if message:
        if exit_on_error:
            fail(message)
        raise DatalistError(str(datalist), [message])
    if check_overlap:  # evaluation refuses (unless allowed), training warns
        splits = {"training": train, "validation": val, "test": test}
        check_leakage(splits, table.digests(), str(datalist), not need_training and not allow_split_overlap)
    labelled = [e for e in train if e.get("label") is not None]
    if label_fraction < 1:
        train = label_subset(labelled, label_fraction, seed) + [e for e in train if e.get("label") is None]
    out = {"training": train, "validation": val, "test": test}
    logger.info(
        "datalist %s: %s (label_fraction=%s, seed=%s)",
        datalist,
        ", ".join(f"{k} {len(v)} images / {len(group_by_patient(v))} patients" for k, v in out.items()),
        label_fraction,
        seed,
    )
    return out


def list_images(image_dir: str | os.PathLike) -> list[dict]:
    """Entries ``{"image": path}`` for every readable-looking file under ``image_dir`` (recursive, sorted)."""
    root = Path(image_dir)
    if not root.is_dir():
        raise DatalistError(str(image_dir), ["image folder not found"])
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and is_image_file(p))
    if not files:
        raise DatalistError(str(image_dir), [f"no image files ({', '.join(SUPPORTED_SUFFIXES)}, DICOM) found"])
    return [{"image": str(p), "_id": f"{root.name}/{p.relative_to(root)}"} for p in files]


def pretraining_splits(
    datalist: str | os.PathLike | None,
    dataset_dir: str | os.PathLike,
    class_names: Sequence[str],
    image_dir: str | os.PathLike | None = None,
    multi_label: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, list[dict]]:
    """The images to pretrain on: the ``training`` split of a datalist, or every image of ``image_dir``.

    A datalist is split exactly as ``configs/train.json`` splits it (same function, arguments and seed), so
    pretraining never sees the images that fine-tuning keeps for validation or test. Labels are not needed and
    never used for training; all training images count (no ``label_fraction``). The labelled ``validation``
    entries feed the kNN probe. A plain folder (``image_dir``) has no labels, so no probe. ``cache_dir`` keeps the
    checked files' fingerprints, as in ``prepare_splits``.
    """
    if image_dir:
        entries = list_images(image_dir)
        logger.info("pretraining on %d images found under %s (no labels: no kNN probe)", len(entries), image_dir)
        return {"training": entries, "validation": [], "test": []}
    if not datalist:
        fail("datalist and image_dir are both null: pretraining needs a datalist or a folder of images (image_dir)")
    return prepare_splits(
        datalist,
        dataset_dir,
        class_names,
        multi_label=multi_label,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        label_fraction=1.0,
        require_label=False,
        cache_dir=cache_dir,
        check_overlap=False,  # its splits only keep fine-tuning's held-out patients out; it reports no scores
    )


# the settings the datalist and its splits consume (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "dataset_dir": described(existing_folder, "folder of the images; relative datalist paths start here"),
    "datalist": described(optional(existing_file), "the datalist JSON; not read when ``image_dir`` is given"),
    "image_dir": described(
        optional(existing_folder),
        "pretrain on every image under this folder instead of the datalist (no labels, no probe)",
    ),
    "class_names": described(class_names, "the classes, in the labels' order; their number sizes the classifier"),
    "multi_label": described(boolean, "independent findings (sigmoid, BCE) instead of one class per image"),
    "seed": described(
        integer(0, 2**32 - 1), "seed of the patient-grouped split, the initial weights and the random transforms"
    ),
    "val_fraction": described(
        number(0, 1, hi_open=True), "share of patients for validation, when the datalist has no validation section"
    ),
    "test_fraction": described(
        number(0, 1, hi_open=True), "share of patients for test, when the datalist has no test section"
    ),
    "label_fraction": described(number(0, 1, lo_open=True), "share of the labelled training images kept"),
}


def class_count_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """Single-label classification needs two classes or more."""
    names = s.get("class_names")
    if "class_names" not in s or class_names(names) is not None or len(names) >= 2:
        return []
    if is_true(s.get("multi_label"), "multi_label"):
        return []
    return [
        f"class_names: {show(names)} has one class; single-label classification needs at least two "
        "(or set multi_label true for one yes/no finding)"
    ]


def split_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """The validation and test fractions leave images for training."""
    val, test = s.get("val_fraction"), s.get("test_fraction")
    if is_number(val) and is_number(test) and 0 <= val < 1 and 0 <= test < 1 and val + test >= 1:
        return [f"val_fraction + test_fraction: {val} + {test} leaves no image for training; keep it below 1"]
    return []


CHECKS = (class_count_check, split_check)
