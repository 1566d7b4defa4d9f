"""Training / validation / test sections: patient-grouped, class-stratified, seeded (``bundle.data``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..data.splits import split_by_patient

__all__ = ["assign_splits"]


def _split(entries: Sequence[dict], group_of: Callable[[dict], str], val: float, test: float, seed: int):
    # split_by_patient groups by "patient": hand it stand-ins carrying the merged group, then map back.
    proxies = [{"patient": group_of(e), "label": e.get("label"), "image": str(i)} for i, e in enumerate(entries)]
    return tuple([entries[int(p["image"])] for p in part] for part in split_by_patient(proxies, val, test, seed))


def assign_splits(
    entries: Sequence[dict],
    group_of: Callable[[dict], str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    official_test: bool = False,
) -> tuple[dict[str, list[dict]], list[str]]:
    """Split ``entries`` into ``{"training", "validation", "test"}``; also return notes for the summary.

    ``group_of`` gives each entry's patient group, so no group is in two sections. With ``official_test`` the
    dataset's own test images (``_official == "test"``) form the test section, joined by any other image of
    their patients, and ``val_fraction`` of the rest is split off for validation (``test_fraction`` unused).
    """
    notes = []
    if not official_test:
        train, val, test = _split(entries, group_of, val_fraction, test_fraction, seed)
        return {"training": train, "validation": val, "test": test}, notes
    test_groups = {group_of(e) for e in entries if e.get("_official") == "test"}
    if not test_groups:
        raise ValueError("--official-test: the source marks no image as part of its test set")
    test = [e for e in entries if group_of(e) in test_groups]
    moved = sum(e.get("_official") != "test" for e in test)
    if moved:
        notes.append(f"{moved} image(s) outside the official test set moved to test: their patient is in it")
    rest = [e for e in entries if group_of(e) not in test_groups]
    train, val, _ = _split(rest, group_of, val_fraction, 0.0, seed)
    return {"training": train, "validation": val, "test": test}, notes
