"""From a layout's scan to ``datalist.json`` and ``summary.json``: check, de-duplicate, split, cache, write."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO

from ..atomic import atomic_write, make_folder
from .cache import CacheSpec, plan_cache_paths, target_size
from .dedup import PatientGroups, patient_key, resolve_duplicates
from .files import rel
from .records import PrepareError, Scan, Skip
from .splits import assign_splits
from .summary import SECTIONS, build_summary, format_summary
from .verify import FileCheck, FileTask, check_files

__all__ = ["Options", "prepare"]


@dataclass
class Options:
    """Settings shared by every layout (see ``scripts/prepare_dataset.py --help``)."""

    src: str
    out: str
    layout: str
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    official_test: bool = False
    cache: CacheSpec | None = None
    workers: int = 1
    decode: bool = True
    paths: str = "auto"  # "auto": relative when under the output folder, else absolute; or "relative"/"absolute"
    record: dict = field(default_factory=dict)  # the command-line options, saved in the summary


def _write_json(path: str, content: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(content, f, indent=1)
        f.write("\n")


def _file_tasks(entries: list[dict], cache_paths: dict[str, str]) -> list[FileTask]:
    images = list(dict.fromkeys(e["image"] for e in entries))
    image_set = set(images)
    masks = [m for m in dict.fromkeys(e["mask"] for e in entries if "mask" in e) if m not in image_set]
    return [FileTask(p, "image", cache_paths.get(p)) for p in images] + [
        FileTask(p, "mask", cache_paths.get(p)) for p in masks
    ]


def _usable(entries: list[dict], checks: dict[str, FileCheck]) -> tuple[list[dict], list[Skip]]:
    """Entries whose image is readable; unreadable masks are dropped from their entry, the image kept."""
    kept, skipped, reported = [], [], set()
    for e in entries:
        image = checks[e["image"]]
        if image.error:
            if e["image"] not in reported:
                reported.add(e["image"])
                kind = "missing_file" if image.error == "file not found" else "unreadable"
                skipped.append(Skip(e["image"], image.error, kind))
            continue
        if "mask" in e:
            mask = checks[e["mask"]]
            problem = f"mask {mask.error}" if mask.error else None
            if not problem and mask.shape and image.shape and mask.shape != image.shape:
                problem = f"mask shape {mask.shape} differs from image shape {image.shape}"
            if problem:
                skipped.append(Skip(e["mask"], f"{problem}; image {e['image']} kept without a mask", "bad_mask"))
                del e["mask"]
        kept.append(e)
    return kept, skipped


def _to_cache(e: dict, checks: dict[str, FileCheck], cache_paths: dict[str, str], spec: CacheSpec, src: str) -> None:
    """Point an entry at its cached PNGs and scale its boxes to the cached size."""
    rows, cols = checks[e["image"]].shape
    width, height = target_size((rows, cols), spec)
    e["orig_size"] = [cols, rows]
    e["source_path"] = rel(e["image"], src)
    if e.get("boxes"):
        sx, sy = width / cols, height / rows
        e["boxes"] = [
            [round(x * sx, 2), round(y * sy, 2), round(w * sx, 2), round(h * sy, 2)] for x, y, w, h in e["boxes"]
        ]
    e["image"] = cache_paths[e["image"]]
    if "mask" in e:
        e["mask"] = cache_paths[e["mask"]]


def _written_path(path: str, out: str, mode: str) -> str:
    path = os.path.abspath(path)
    inside = not os.path.relpath(path, out).startswith("..")
    if mode == "relative" or (mode == "auto" and inside):
        return os.path.relpath(path, out)
    return path


def _finish(e: dict, out: str, mode: str) -> dict:
    """The entry as written: paths in the chosen form, private keys dropped, fields in a readable order."""
    e = {k: v for k, v in e.items() if not k.startswith("_")}
    for key in ("image", "mask"):
        if key in e:
            e[key] = _written_path(e[key], out, mode)
    first = [k for k in ("image", "label", "label_name", "mask", "patient") if k in e]
    return {k: e[k] for k in first} | {k: v for k, v in e.items() if k not in first}


def _check_official_test(scan: Scan, options: Options, src: str) -> None:
    """Stop before reading every file when ``--official-test`` has no test set to take: the split would fail at
    the end."""
    if options.official_test and not any(e.get("_official") == "test" for e in scan.entries):
        raise PrepareError(f"--official-test: no image of {src} is part of the dataset's own test set")


def _plan_cache(entries: list[dict], src: str, spec: CacheSpec | None) -> dict[str, str]:
    """Source path -> cached PNG path of every image and mask ({} without a cache).

    Raises:
        PrepareError: the cache would overwrite source files.
    """
    if spec is None:
        return {}
    paths = [e["image"] for e in entries] + [e["mask"] for e in entries if "mask" in e]
    cache_paths = plan_cache_paths(paths, src, spec)
    overwritten = sorted(p for p, c in cache_paths.items() if os.path.realpath(p) == os.path.realpath(c))
    if overwritten:  # a cache folder that mirrors the source tree onto itself
        raise PrepareError(
            f"--cache-dir {spec.root} would overwrite {len(overwritten)} source file(s) such as {overwritten[0]}; "
            "give the cache a folder of its own"
        )
    return cache_paths


def _split_sections(
    entries: list[dict], groups: PatientGroups, options: Options
) -> tuple[dict[str, list[dict]], list[str]]:
    """The sections by patient group, and the split's notes.

    Raises:
        PrepareError: fractions out of range, or ``--official-test`` on a source without a test set.
    """
    try:
        return assign_splits(
            entries,
            lambda e: groups.find(patient_key(e)),
            options.val_fraction,
            options.test_fraction,
            options.seed,
            options.official_test,
        )
    except ValueError as e:
        raise PrepareError(str(e)) from None


def _apply_cache(
    entries: list[dict], checks: dict[str, FileCheck], cache_paths: dict[str, str], spec: CacheSpec | None, src: str
) -> dict | None:
    """Point the entries at their cached PNGs; the cache's part of the summary (None without a cache)."""
    if spec is None:
        return None
    for e in entries:
        _to_cache(e, checks, cache_paths, spec, src)
    done = [c.cached for c in checks.values() if c.cached]
    return {
        "dir": os.path.abspath(spec.root),
        "settings": spec.tag,
        "written": done.count("written"),
        "reused": done.count("reused"),
    }


def _empty_section_notes(entries: list[dict], sections: dict[str, list[dict]], options: Options) -> list[str]:
    """A note for each section that was asked for but came out empty."""
    return [
        f"section '{s}' is empty: too few patients for the requested fractions"
        for s in SECTIONS
        if entries
        and not sections[s]
        and (s != "validation" or options.val_fraction)
        and (s != "test" or options.test_fraction or options.official_test)
    ]


def _datalist(scan: Scan, options: Options, src: str, sections: dict[str, list[dict]]) -> dict:
    """The content of ``datalist.json``."""
    spec = options.cache
    return {
        "name": scan.name,
        "description": f"prepared from the '{options.layout}' layout of {src}",
        "labels": {str(i): n for i, n in enumerate(scan.class_names)},
        "class_names": list(scan.class_names),
        "multi_label": scan.multi_label,
        "tensorImageSize": "2D",
        "numTraining": len(sections["training"]),
        **({"image_size": [spec.size, spec.size]} if spec is not None and not spec.keep_aspect else {}),
        **sections,
    }


def _write_outputs(out: str, src: str, summary: dict, datalist: dict, usable: bool, stream: IO[str]) -> None:
    """Write ``summary.json`` and print it, then ``datalist.json`` unless no image is left.

    Raises:
        PrepareError: no usable image is left (the summary is written all the same).
    """
    _write_json(os.path.join(out, "summary.json"), summary)
    print(format_summary(summary), file=stream)
    if not usable:
        raise PrepareError(f"no usable image found in {src}; the reasons are in {os.path.join(out, 'summary.json')}")
    _write_json(os.path.join(out, "datalist.json"), datalist)
    print(f"\nwrote {os.path.join(out, 'datalist.json')} and summary.json", file=stream)


def prepare(scan: Scan, options: Options, stream: IO[str] | None = None) -> dict:
    """Check every file of ``scan``, resolve exact duplicates, split by patient, optionally cache, and write
    ``datalist.json`` and ``summary.json`` into ``options.out``. Prints the summary; returns it.

    Raises:
        PrepareError: no usable image is left (the summary, with the reasons, is still written), the cache would
            overwrite source files, or the split cannot be made (``--official-test`` without a test set).
    """
    stream = stream or sys.stdout
    out = os.path.abspath(options.out)
    src = os.path.abspath(options.src)
    make_folder(out, "the output folder", "or pass another --out, then rerun")
    spec = options.cache
    skipped, notes = list(scan.skipped), list(scan.notes)
    _check_official_test(scan, options, src)
    cache_paths = _plan_cache(scan.entries, src, spec)
    checks = check_files(_file_tasks(scan.entries, cache_paths), options.workers, spec, options.decode)
    entries, bad = _usable(scan.entries, checks)
    skipped += bad
    entries, dup_skipped, duplicates, groups = resolve_duplicates(entries, {p: c.sha256 for p, c in checks.items()})
    skipped += dup_skipped

    sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
    if entries:
        sections, split_notes = _split_sections(entries, groups, options)
        notes += split_notes
    cache_report = _apply_cache(entries, checks, cache_paths, spec, src)
    notes += _empty_section_notes(entries, sections, options)
    sections = {
        s: sorted((_finish(e, out, options.paths) for e in sections[s]), key=lambda e: e["image"]) for s in SECTIONS
    }

    summary = build_summary(
        name=scan.name,
        layout=options.layout,
        src=src,
        out=out,
        class_names=scan.class_names,
        multi_label=scan.multi_label,
        sections=sections,
        skipped=skipped,
        duplicates=duplicates,
        notes=notes,
        options=options.record,
        cache=cache_report,
    )
    _write_outputs(out, src, summary, _datalist(scan, options, src, sections), bool(entries), stream)
    return summary
