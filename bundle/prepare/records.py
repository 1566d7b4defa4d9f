"""The records passed between a layout scan and the preparation pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PrepareError", "Scan", "Skip"]


class PrepareError(RuntimeError):
    """The source cannot be prepared at all (missing label file, wrong CSV header, bad option)."""


@dataclass
class Skip:
    """One file or label-file row left out of the datalist.

    ``item`` names it (a path, or ``"<file> line <n>"`` for a CSV row), ``reason`` says why in words a user can
    act on, and ``kind`` is a short category used for the counts in the summary.
    """

    item: str
    reason: str
    kind: str

    def to_dict(self) -> dict[str, str]:
        return {"item": self.item, "kind": self.kind, "reason": self.reason}


@dataclass
class Scan:
    """What a layout found: candidate entries (absolute paths, not yet read) and what it left out.

    Entries hold ``image``, ``label`` (int, list of 0/1, or absent), optional ``mask`` and ``patient``, free
    extras (``boxes``, ``view``, ``source``...) and private keys starting with ``_`` that the pipeline uses and
    drops: ``_official`` (``"test"`` for an image of the dataset's own test set).
    """

    name: str
    class_names: list[str]
    multi_label: bool
    entries: list[dict]
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
