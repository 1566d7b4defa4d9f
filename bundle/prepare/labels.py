"""Class names: one spelling for every source, a stable order, and user choice of classes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .records import PrepareError, Skip

__all__ = ["MODEL_CLASSES", "assign_classes", "class_key", "order_classes", "parse_mapping", "select_findings"]

# Classes that mean "nothing found" go first so that index 0 is the negative class wherever the data has one.
NEGATIVE_NAMES = ("normal", "negative", "no_finding", "no_pneumonia")
# The shipped model's classes, in its order (models/model.recipe.json; a test keeps them in step): found classes
# take this order, so that the shipped model evaluates a prepared datalist without renumbering a class.
MODEL_CLASSES = ("normal", "bacterial_pneumonia", "viral_pneumonia", "covid19")


def class_key(name: str) -> str:
    """Canonical class name: lower case, runs of other characters to ``_`` (``"COVID-19"`` -> ``"covid_19"``)."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def order_classes(names: Iterable[str]) -> list[str]:
    """Negative classes first, the rest sorted, so the order does not depend on which file came first."""
    names = set(names)
    first = [n for n in NEGATIVE_NAMES if n in names]
    return first + sorted(names - set(first))


def parse_mapping(pairs: Sequence[str] | None, option: str) -> dict[str, str]:
    """``["OLD=NEW", ...]`` (from the command line) to ``{class_key(OLD): class_key(NEW)}``."""
    out = {}
    for pair in pairs or ():
        old, sep, new = pair.partition("=")
        if not sep or not class_key(old) or not class_key(new):
            raise PrepareError(f"{option}: expected OLD=NEW, got {pair!r}")
        out[class_key(old)] = class_key(new)
    return out


def assign_classes(
    entries: list[dict],
    classes: Sequence[str] | None = None,
    class_map: dict[str, str] | None = None,
    preferred: Sequence[str] = (),
) -> tuple[list[dict], list[str], list[Skip]]:
    """Turn each entry's raw ``_class`` text into an int ``label`` and ``label_name``.

    ``class_map`` renames or merges classes (keys and values are class keys); ``classes`` keeps only those
    classes, in that order (the rest are reported as left out); without it every class found is kept, those of
    the shipped model first in its order (``MODEL_CLASSES``), then those in ``preferred`` (the source's own
    order), then in ``order_classes`` order. Returns the kept entries, the class names and the skipped entries.
    """
    class_map = class_map or {}
    for e in entries:
        key = class_key(e.pop("_class"))
        e["label_name"] = class_map.get(key, key)
    found = {e["label_name"] for e in entries}
    first = list(dict.fromkeys(p for p in (*MODEL_CLASSES, *preferred) if p in found))
    names = [class_key(c) for c in classes] if classes else first + order_classes(found - set(first))
    if len(set(names)) != len(names):
        raise PrepareError(f"--classes names a class twice: {names}")
    missing = [c for c in names if c not in found]
    if classes and missing:
        raise PrepareError(f"--classes: no image of class(es) {missing}; classes found: {order_classes(found)}")
    index = {n: i for i, n in enumerate(names)}
    kept, skipped = [], []
    for e in entries:
        if e["label_name"] in index:
            e["label"] = index[e["label_name"]]
            kept.append(e)
        else:
            skipped.append(Skip(e["image"], f"class '{e['label_name']}' not in --classes {names}", "filtered"))
    return kept, names, skipped


def select_findings(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The findings (source column names) to use as multi-label classes: ``wanted`` matched by ``class_key``."""
    if not wanted:
        return list(available)
    by_key = {class_key(a): a for a in available}
    unknown = [w for w in wanted if class_key(w) not in by_key]
    if unknown:
        raise PrepareError(f"--findings: unknown finding(s) {unknown}; known: {list(available)}")
    return [by_key[class_key(w)] for w in wanted]
