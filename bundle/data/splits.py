"""Patient-grouped, class-stratified, seeded splits and label fractions of datalist entries.

No patient is in two splits; every class keeps its share of patients (largest-remainder quotas, so small strata
are not lost); the same arguments always give the same split, so training and evaluation rebuild it alike.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["group_by_patient", "split_by_patient", "label_subset"]


def _stratum(entry: dict) -> str:
    label = entry.get("label")
    if label is None:
        return "unlabelled"
    if isinstance(label, (list, tuple)):  # multi-label: stratify by the label pattern
        return "".join(str(int(v)) for v in label)
    return str(label)


def group_by_patient(entries: Sequence[dict]) -> dict[str, list[dict]]:
    """Entries grouped by patient; entries without a patient are their own group."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        groups[str(e.get("patient") or f"image:{e.get('image')}")].append(e)
    return groups


def _groups_by_stratum(entries: Sequence[dict], seed: int) -> dict[str, list[list[dict]]]:
    """Patient groups bucketed by their most frequent class, each bucket shuffled with ``seed``."""
    buckets: dict[str, list[list[dict]]] = defaultdict(list)
    for _, members in sorted(group_by_patient(entries).items()):
        strata = [_stratum(m) for m in members]
        buckets[max(sorted(set(strata)), key=strata.count)].append(members)
    rng = random.Random(seed)
    for key in sorted(buckets):
        rng.shuffle(buckets[key])
    return buckets


def split_by_patient(
    entries: Sequence[dict], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[dict], list[dict], list[dict]]:
    """Split into (training, validation, test): grouped by patient, stratified by class, seeded."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"need 0 <= val_fraction, test_fraction and their sum < 1, got {val_fraction}, {test_fraction}"
        )
    buckets = sorted(_groups_by_stratum(entries, seed).items())
    sizes = [len(groups) for _, groups in buckets]
    n_test = _quotas(sizes, test_fraction, seed)
    n_val = _quotas([n - t for n, t in zip(sizes, n_test)], val_fraction / (1 - test_fraction), seed + 1)
    train, val, test = [], [], []
    for (_, groups), t, v in zip(buckets, n_test, n_val):
        for i, members in enumerate(groups):
            (test if i < t else val if i < t + v else train).extend(members)
    return train, val, test


def _quotas(sizes: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Patients per stratum for a split: largest-remainder rounding so that the total is round(N * fraction).

    Plain per-stratum rounding loses small strata (e.g. rare multi-label patterns) and can leave a split empty.
    Strata with at least 3 patients give at least one to every requested split.
    """
    if not fraction:
        return [0] * len(sizes)
    exact = [n * fraction for n in sizes]
    quotas = [int(x) for x in exact]
    rng = random.Random(seed)
    order = sorted(range(len(sizes)), key=lambda i: (exact[i] - quotas[i], rng.random()), reverse=True)
    for i in order[: max(0, round(sum(sizes) * fraction) - sum(quotas))]:
        quotas[i] += 1
    return [max(q, 1) if n >= 3 else min(q, n - 1) if n > 1 else q for q, n in zip(quotas, sizes)]


def label_subset(entries: Sequence[dict], fraction: float, seed: int) -> list[dict]:
    """Keep ``fraction`` (0 < f <= 1) of the images, whole patients at a time, stratified by class, seeded.

    Each class keeps at least one patient. Label-efficiency experiments vary only ``fraction``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(entries)
    kept = []
    for _, groups in sorted(_groups_by_stratum(entries, seed + 1).items()):
        target = max(1, math.ceil(fraction * sum(len(g) for g in groups) - 0.5))
        count = 0
        for members in groups:
            if count >= target:
                break
            kept.extend(members)
            count += len(members)
    order = {id(e): i for i, e in enumerate(entries)}
    return sorted(kept, key=lambda e: order[id(e)])
