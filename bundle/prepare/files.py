"""Finding files and reading label files, with locations a user can look up (``train.csv line 12``)."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data.readers import DICOM_SUFFIXES, is_image_file
from .records import PrepareError

__all__ = [
    "find_file",
    "image_files",
    "index_by_name",
    "is_dicom_file",
    "iter_files",
    "read_csv",
    "read_text",
    "rel",
    "row_ref",
]


def iter_files(root: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Every regular file under ``root``, sorted, without hidden files or folders (``.DS_Store``, ``__MACOSX``)
    and without the folders in ``exclude`` (an output or cache folder placed inside the dataset)."""
    root = Path(root)
    skip = {os.path.abspath(e) for e in exclude}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d != "__MACOSX" and os.path.abspath(os.path.join(dirpath, d)) not in skip
        )
        out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(out)


def index_by_name(files: Sequence[Path]) -> dict[str, list[Path]]:
    """File name -> the files with that name (label files name images without their folder)."""
    index: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        index[f.name].append(f)
    return index


def find_file(name: str, candidates: Sequence[Path], index: dict[str, list[Path]]) -> Path | None:
    """The first existing path of ``candidates``, else the only indexed file called ``name``'s base name.

    Several indexed files with that name and none among the candidates: the first in sorted order, so that the
    result does not depend on the file system's listing order.
    """
    for c in candidates:
        if c.is_file():
            return c
    found = index.get(os.path.basename(name), [])
    return sorted(found)[0] if found else None


def image_files(files: Sequence[Path]) -> list[Path]:
    """The files that are images by their suffix or DICOM by their content (not CSVs, PDFs, notes)."""
    return [f for f in files if (f.suffix and is_image_file(f)) or is_dicom_file(f)]


def is_dicom_file(path: str | os.PathLike) -> bool:
    """DICOM by suffix, or by the ``DICM`` magic at byte 128 for files without one."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        return True
    if Path(path).suffix and is_image_file(path):
        return False  # a PNG/JPEG/NIfTI by its suffix
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def rel(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` when it lies inside it, else unchanged (for messages)."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def row_ref(csv_path: str | os.PathLike, line: int) -> str:
    """How a skipped CSV row is named in the summary: ``"<file name> line <n>"`` (the header is line 1)."""
    return f"{Path(csv_path).name} line {line}"


def _unreadable(path: Path, e: Exception) -> PrepareError:
    """The one message for a label file that is not UTF-8 text or cannot be opened."""
    if isinstance(e, UnicodeDecodeError):
        return PrepareError(
            f"{path}: not a text file in UTF-8 (undecodable byte at offset {e.start}); is this the right file?"
        )
    return PrepareError(f"{path}: cannot read the label file ({getattr(e, 'strerror', None) or e})")


def read_text(path: str | os.PathLike) -> str:
    """A label file's text (UTF-8, byte order mark dropped); stops with a clear error on a binary file."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"label file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise _unreadable(path, e) from None


def read_csv(path: str | os.PathLike, required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file as ``(line number, {column: value})``; stops with a clear error on a wrong header,
    a file that is not UTF-8 text or a line the CSV reader cannot parse.

    A byte order mark (Excel exports) is dropped and column names are stripped of surrounding spaces.
    """
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"label file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise PrepareError(
                    f"{path}: column(s) {', '.join(repr(c) for c in missing)} not in the header {header}; "
                    "is this the right file?"
                )
            for row in reader:
                if not any(v.strip() for v in row):
                    continue
                yield reader.line_num, {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
    except csv.Error as e:
        raise PrepareError(f"{path} line {reader.line_num}: not a CSV row ({e}); is this the right file?") from None
    except (UnicodeDecodeError, OSError) as e:
        raise _unreadable(path, e) from None
