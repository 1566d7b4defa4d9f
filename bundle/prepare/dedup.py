"""Exact duplicates (same bytes): one copy kept, and the patients of all copies kept in one split."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

from .records import Skip

__all__ = ["PatientGroups", "patient_key", "resolve_duplicates"]


def patient_key(entry: dict) -> str:
    """The patient an entry belongs to; an entry without one is its own patient."""
    return str(entry.get("patient") or f"image:{entry['image']}")


class PatientGroups:
    """Union-find over patient keys: patients that share an image file must land in the same split."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        """The group (smallest member key) that ``key`` belongs to."""
        root = key
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while key != root:  # path compression keeps later look-ups short
            self.parent[key], key = root, self.parent.get(key, key)
        return root

    def union(self, a: str, b: str) -> bool:
        """Put ``a`` and ``b`` in one group; whether they were in different groups before."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        lo, hi = sorted((ra, rb))
        self.parent[hi] = lo
        return True


def _label_text(entry: dict) -> str:
    return json.dumps(entry.get("label"))


def _resolve_copies(digest: str, copies: list[dict]) -> tuple[list[dict], list[Skip], dict]:
    """The copies of one image content left out, why, and the report's detail for them."""
    ordered = sorted(copies, key=lambda c: (c.get("mask") is None, c["image"]))
    labels = sorted({_label_text(c) for c in copies})
    files = [c["image"] for c in ordered]
    if len(labels) == 1:
        kept = ordered[0]
        skipped = [
            Skip(c["image"], f"exact duplicate of {kept['image']} (same label); one copy kept", "duplicate")
            for c in ordered[1:]
        ]
        detail = {"sha256": digest, "files": files, "kept": kept["image"], "resolution": "kept one copy"}
        return ordered[1:], skipped, detail
    skipped = [
        Skip(
            c["image"],
            f"exact duplicates with different labels {labels}: all copies left out ({', '.join(files)})",
            "duplicate_conflict",
        )
        for c in ordered
    ]
    detail = {
        "sha256": digest,
        "files": files,
        "kept": None,
        "resolution": f"labels differ {labels}: all copies left out",
    }
    return ordered, skipped, detail


def _report(details: list[dict], images_removed: int, merged: int) -> dict:
    """The duplicates' part of the summary."""
    return {
        "groups": len(details),
        "images_removed": images_removed,
        "groups_with_conflicting_labels": sum(d["kept"] is None for d in details),
        "patient_merges": merged,
        "resolution": "same label: one copy kept (one with a mask first); different labels: all copies left out; "
        "patients of copies merged so that they stay in one split",
        "details": details,
    }


def resolve_duplicates(
    entries: Sequence[dict], sha256: dict[str, str]
) -> tuple[list[dict], list[Skip], dict, PatientGroups]:
    """Keep one entry per image content.

    Copies with the same label: the first copy with a mask (else the first by path) is kept, the others are
    left out. Copies with different labels: all are left out, since the right label is unknown. Either way the
    patients of all copies are merged into one group for splitting, because the same picture under two
    patient ids is most likely one person. Returns the kept entries (in input order), the skipped copies, a
    report for the summary, and the patient groups.
    """
    groups = PatientGroups()
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_hash[sha256[e["image"]]].append(e)
    dropped: set[int] = set()
    skipped: list[Skip] = []
    details = []
    merged = 0
    for digest, copies in by_hash.items():
        if len(copies) < 2:
            continue
        keys = [patient_key(c) for c in copies]
        merged += sum(groups.union(keys[0], k) for k in keys[1:])
        left_out, why, detail = _resolve_copies(digest, copies)
        dropped.update(id(c) for c in left_out)
        skipped += why
        details.append(detail)
    return [e for e in entries if id(e) not in dropped], skipped, _report(details, len(skipped), merged), groups
