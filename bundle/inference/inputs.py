"""The images of an inference run: every file of a folder (so that unsupported ones are reported) or a datalist."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..data.datalist import SECTIONS, DatalistError, load_datalist
from ..data.transforms import file_stem
from ..values import Rule, as_bool, boolean, described, folder_or_file, integer, optional

__all__ = ["list_inputs"]


def _output_names(paths: Sequence[str], root: str | None) -> list[str]:
    """A unique, flat output name per input: the path under ``root`` with folders joined by ``__``, no suffix.

    Inputs that differ only by suffix (``a.png``, ``a.dcm``) keep it as ``a_png``, ``a_dcm``.
    """

    def rel_parts(p: str) -> tuple[str, ...]:
        rel = os.path.relpath(p, root) if root else ""
        return Path(os.path.basename(p) if not rel or rel.startswith("..") else rel).parts

    def join(parts: tuple[str, ...], keep_suffix: bool) -> str:
        last = file_stem(parts[-1])
        if keep_suffix and last != parts[-1]:
            last = f"{last}_{parts[-1][len(last):].lstrip('.').replace('.', '_')}"
        return "__".join([*parts[:-1], last]) or "image"

    plain = [join(rel_parts(p), False) for p in paths]
    clashes = {n for n in plain if plain.count(n) > 1}
    names, seen = [], set()
    for p, name in zip(paths, plain):
        name = join(rel_parts(p), True) if name in clashes else name
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}_{n}", n + 1
        seen.add(unique)
        names.append(unique)
    return names


def _datalist_entries(datalist: str | os.PathLike, dataset_dir: str) -> list[dict]:
    """Each image of the datalist's sections once, in order, with its mask and patient where it has them.

    Raises:
        SystemExit: the datalist cannot be read, with the reason.
    """
    try:
        sections = load_datalist(datalist, dataset_dir)
    except DatalistError as e:
        raise SystemExit(str(e)) from None
    entries, seen = [], set()
    for section in SECTIONS:
        for e in sections.get(section, []):
            image = e.get("image")
            if not isinstance(image, str) or image in seen:
                continue
            seen.add(image)
            entry = {"image": image}
            if isinstance(e.get("mask"), str):
                entry["mask"] = e["mask"]
            if isinstance(e.get("patient"), (str, int)):  # the Patient ID of a DICOM source made from the image
                entry["patient"] = str(e["patient"])
            entries.append(entry)
    return entries


def _folder_entries(dataset_dir: str, recursive: bool, exclude: Sequence[str | os.PathLike]) -> list[dict]:
    """Every non-hidden file of the folder outside ``exclude``, sorted."""
    pattern = "**/*" if recursive else "*"
    skip = [Path(e).resolve() for e in exclude if e]
    files = sorted(
        str(p)
        for p in Path(dataset_dir).glob(pattern)
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(dataset_dir).parts)
        and not any(p.resolve().is_relative_to(e) for e in skip)
    )
    return [{"image": f} for f in files]


def list_inputs(
    dataset_dir: str | os.PathLike,
    datalist: str | os.PathLike | None = None,
    recursive: bool = True,
    max_images: int | None = None,
    exclude: Sequence[str | os.PathLike] = (),
) -> list[dict]:
    """Entries ``{"image", "name"[, "mask", "patient"]}`` to run inference on.

    Args:
        dataset_dir: a folder of CXRs (every non-hidden file is listed, so that unsupported ones get a status
            instead of being skipped silently), or a single file. With ``datalist``, the base of relative paths.
        datalist: a datalist JSON (see ``bundle.data.datalist``); all its sections, in order, each image once. An
            entry's ``mask`` is its ground-truth lung mask, used for lung attention.
        recursive: list sub-folders too (DICOM exports are often nested).
        max_images: keep only the first ``max_images`` entries (demos, smoke tests).
        exclude: folders never listed, e.g. the run's own output folder when it lies inside ``dataset_dir``
            (a second run would otherwise take the first run's masks and overlays for radiographs).

    Raises:
        SystemExit: nothing to process (missing folder, empty folder or datalist), with the reason.
    """
    dataset_dir = os.fspath(dataset_dir)
    recursive = as_bool(recursive, "recursive")
    if datalist:
        entries, root = _datalist_entries(datalist, dataset_dir), dataset_dir
    elif os.path.isfile(dataset_dir):
        entries, root = [{"image": dataset_dir}], os.path.dirname(dataset_dir)
    elif os.path.isdir(dataset_dir):
        entries, root = _folder_entries(dataset_dir, recursive, exclude), dataset_dir
    else:
        raise SystemExit(f"dataset_dir {dataset_dir!r}: no such folder or file")
    if max_images is not None:
        entries = entries[: int(max_images)]
    if not entries:
        raise SystemExit(f"nothing to process in {datalist or dataset_dir!r}")
    for entry, name in zip(entries, _output_names([e["image"] for e in entries], root)):
        entry["name"] = name
    return entries


# the settings the input listing consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "recursive": described(boolean, "search the sub-folders of ``dataset_dir``"),
    "max_images": described(optional(integer(1)), "process only the first N inputs; null: all"),
}
# inference reads a folder, one file or a datalist's folder
WORKFLOW_RULES: dict[str, dict[str, Rule]] = {
    "inference": {
        "dataset_dir": described(folder_or_file, "a folder of images (searched as ``recursive`` says) or one image")
    }
}
