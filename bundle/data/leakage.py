"""Leakage between splits: the same image, the same patient or the same picture in two of training, validation and
test.

A model scored on images it trained on, on another image of a patient it trained on, or on a copy of a training
image under another name scores higher than it would on new patients, and nothing in the scores shows it. The
splits split off by ``bundle.data.split_by_patient`` never share a patient; the sections a datalist gives itself
can share anything. ``find_overlaps`` compares the final splits three ways:

* ``image``: the same file (absolute path);
* ``patient``: the same ``patient`` id (entries without one are not compared this way);
* ``content``: the same decoded pixels under another path (the pixel hashes of ``bundle.data.fingerprints``,
  taken by the entry check's decode, so nothing is decoded twice).

Evaluation refuses such a datalist unless ``allow_split_overlap`` is true; training logs one warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import fail
from ..values import Rule, boolean, described

__all__ = ["Overlap", "find_overlaps", "describe_overlaps", "check_leakage", "SHOWN"]

logger = logging.getLogger(__name__)

SHOWN = 10  # overlaps listed one per line; the rest are counted
# the order the splits are named in a line: the one whose scores are inflated first
_ORDER = ("test", "validation", "training")
_NOUNS = {"image": ("image", "images"), "patient": ("patient", "patients"), "content": ("copy", "copies")}


class Overlap(NamedTuple):
    """One image, patient or picture in several splits: ``kind``, its ``key`` (path, patient id or pixel hash) and
    one ``(split, entry)`` per split that holds it."""

    kind: str
    key: str
    entries: tuple[tuple[str, dict], ...]


def _grouped(splits: Mapping[str, Sequence[dict]], key_of: Callable[[dict], Any]) -> dict[str, dict[str, list[dict]]]:
    """``{key: {split: [entries]}}`` for every key shared by two splits or more."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for split in sorted(splits, key=lambda s: _ORDER.index(s) if s in _ORDER else len(_ORDER)):
        for entry in splits[split]:
            key = key_of(entry)
            if key is not None and key != "":
                groups.setdefault(str(key), {}).setdefault(split, []).append(entry)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _copies(by_split: dict[str, list[dict]]) -> tuple[tuple[str, dict], ...] | None:
    """One entry per split showing a copy under another path, or None when every split holds the same path (that is
    a shared image, reported as such)."""
    splits = list(by_split)
    first = by_split[splits[0]][0]
    chosen = [(splits[0], first)]
    for split in splits[1:]:
        other = next((e for e in by_split[split] if e.get("image") != first.get("image")), by_split[split][0])
        chosen.append((split, other))
    return tuple(chosen) if len({e.get("image") for _, e in chosen}) > 1 else None


def find_overlaps(splits: Mapping[str, Sequence[dict]], digests: Mapping[str, str] | None = None) -> list[Overlap]:
    """Every image path, patient id and pixel hash (``digests``: image path -> hash) found in two splits or more.

    Args:
        splits: ``{"training": [...], "validation": [...], "test": [...]}``, entries as ``load_datalist`` gives.
        digests: pixel hashes by image path; None or empty compares paths and patients only.

    Returns:
        one ``Overlap`` per shared key, images first, then patients, then copies.
    """
    digests = digests or {}
    out = []
    for key, by_split in _grouped(splits, lambda e: e.get("image")).items():
        out.append(Overlap("image", key, tuple((s, es[0]) for s, es in by_split.items())))
    for key, by_split in _grouped(splits, lambda e: e.get("patient")).items():
        out.append(Overlap("patient", key, tuple((s, es[0]) for s, es in by_split.items())))
    for key, by_split in _grouped(splits, lambda e: digests.get(e.get("image"))).items():
        entries = _copies(by_split)
        if entries:
            out.append(Overlap("content", key, entries))
    return out


def _name(split: str, entry: dict) -> str:
    """``test[3] (/data/a.png)``; an entry split off another section says where it went."""
    ident = str(entry.get("_id", "?"))
    where = "" if ident.startswith(f"{split}[") else f", in the {split} split"
    return f"{ident} ({entry.get('image')}{where})"


def _line(overlap: Overlap) -> str:
    names = [_name(s, e) for s, e in overlap.entries]
    joined = ", ".join(names[:-1]) + " and " + names[-1]
    what = {
        "image": "same image",
        "patient": f"same patient {overlap.key}",
        "content": "same pixels (a copy under another name)",
    }
    return f"{joined}: {what[overlap.kind]}"


def describe_overlaps(overlaps: Sequence[Overlap], shown: int = SHOWN) -> tuple[str, list[str]]:
    """(the counts per kind, e.g. ``"2 images, 1 patient and 1 copy"``, the first ``shown`` lines and a count of
    the rest)."""
    counts = Counter(o.kind for o in overlaps)
    parts = [f"{counts[k]} {_NOUNS[k][counts[k] != 1]}" for k in _NOUNS if counts[k]]
    summary = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    lines = [_line(o) for o in overlaps[:shown]]
    if len(overlaps) > shown:
        lines.append(f"... and {len(overlaps) - shown} more")
    return summary, lines


def check_leakage(
    splits: Mapping[str, Sequence[dict]], digests: Mapping[str, str] | None, datalist: str, refuse: bool
) -> list[Overlap]:
    """Report images, patients and pictures shared by two splits: stop the run (``refuse``) or log one WARNING.

    Returns the overlaps found (empty when the splits are apart).

    Raises:
        UserError: with ``refuse`` and an overlap (one message listing them, naming ``allow_split_overlap``).
    """
    overlaps = find_overlaps(splits, digests)
    if not overlaps:
        return overlaps
    summary, lines = describe_overlaps(overlaps)
    listed = "\n".join(f"  - {line}" for line in lines)
    if refuse:
        fail(
            f"{datalist}: the splits share {summary}, so the scores would be inflated:\n{listed}\n"
            "Keep each image, patient and picture in one split (remove the duplicates, or move a patient's images "
            "together), or set allow_split_overlap true (--allow_split_overlap true) to evaluate anyway."
        )
    logger.warning(
        "%s: the splits share %s; validation and test scores will be inflated (evaluation refuses this datalist "
        "unless allow_split_overlap is true):\n%s",
        datalist,
        summary,
        listed,
    )
    return overlaps


# the setting this module consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "allow_split_overlap": described(
        boolean,
        "evaluate even when the splits share an image, a patient or a copy of a picture (scores are then inflated)",
    )
}
