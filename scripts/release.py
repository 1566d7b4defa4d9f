"""Build the release zip of the bundle: what the MONAI model zoo ships, nothing of the development tree.

    python scripts/release.py [--output_dir dist] [--large_file_url_base https://host/path]

Writes ``dist/chest_xray_ssl_multitask_v<version>.zip`` (``version`` from ``configs/metadata.json``, which must
have a ``changelog`` entry for it; nothing is bumped). Everything sits under a top folder
``chest_xray_ssl_multitask/``: ``configs/``, ``bundle/`` (no byte code), the scripts a user runs, the weights in
``models/`` that exist (``model.pt``, ``model.ts``), ``docs/`` and ``LICENSE``. Any file over 25 MB is left out
and listed in a generated ``large_files.yml`` in the zoo's format (path, url, md5), its url under
``--large_file_url_base``. The zip is deterministic, like the zoo's ``compress_bundle`` (fixed timestamps, sorted
entries, no directory entries), so the same tree always gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from bundle.atomic import atomic_write

__all__ = [
    "BUNDLE_NAME",
    "LARGE_FILE_LIMIT",
    "ReleaseError",
    "release_version",
    "candidate_files",
    "release_members",
    "large_files",
    "large_files_yaml",
    "build_release",
]

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_NAME = "chest_xray_ssl_multitask"
# the zoo keeps any file over 25 MB out of a pull request and lists it in large_files.yml (CONTRIBUTING.md)
LARGE_FILE_LIMIT = 25 * 1024 * 1024
# the zoo's compress_bundle runs `touch -t 202205300000` on every file before zipping
ZIP_DATE_TIME = (2022, 5, 30, 0, 0, 0)
# folders shipped whole, relative to the bundle root
SHIPPED_DIRS = ("configs", "bundle", "docs", "label_app")
SHIPPED_FILES = ("LICENSE",)
# what a MONAI Label server writes into the app folder when it runs (weights it trained, logs, helper scripts)
LABEL_APP_RUNTIME = ("label_app/model", "label_app/logs", "label_app/bin")
# scripts a user runs; demo.sh, label_server.py and this script stay in the development tree, as do benchmarks/
# and tests/ (nothing outside SHIPPED_DIRS, these scripts, the weights and SHIPPED_FILES is shipped)
USER_SCRIPTS = (
    "__init__.py",
    "prepare_dataset.py",
    "convert_weights.py",
    "make_sample_data.py",
    "train_release_model.py",
    "study.py",
    "saliency_check.py",
    "pacs.py",
)
MODEL_FILES = ("model.pt", "model.recipe.json", "model.ts")
DEFAULT_URL_BASE = "https://REPLACE-WITH-THE-HOSTING-URL"


class ReleaseError(ValueError):
    """The tree cannot be released as it is (e.g. the version has no changelog entry)."""


def release_version(root: str | os.PathLike = ROOT) -> str:
    """``version`` of ``configs/metadata.json``; a ``ReleaseError`` when it is missing or not in ``changelog``."""
    meta_file = Path(root) / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    version = meta.get("version")
    if not version:
        raise ReleaseError(f"{meta_file} has no 'version'")
    if version not in (meta.get("changelog") or {}):
        raise ReleaseError(
            f"version {version} of {meta_file} is missing from its 'changelog': add a changelog entry for {version} "
            "(or set 'version' to the release being made) before building the release"
        )
    return str(version)


def _shipped(path: Path) -> bool:
    """Not byte code, a cache folder, a hidden file or what a MONAI Label server run left in ``label_app``."""
    if path.as_posix().startswith(tuple(f"{d}/" for d in LABEL_APP_RUNTIME)):
        return False
    return not (path.suffix in (".pyc", ".pyo") or any(p == "__pycache__" or p.startswith(".") for p in path.parts))


def _walk(root: Path, folder: str) -> Iterator[Path]:
    for path in sorted((root / folder).rglob("*")):
        if path.is_file() and _shipped(path.relative_to(root)):
            yield path


def candidate_files(root: str | os.PathLike = ROOT) -> list[tuple[Path, str]]:
    """Every file the bundle carries, large or not: (source path, path relative to the bundle root), sorted."""
    root = Path(root).resolve()
    files = [p for folder in SHIPPED_DIRS for p in _walk(root, folder)]
    files += [root / "scripts" / name for name in USER_SCRIPTS]
    files += [root / "models" / name for name in MODEL_FILES if (root / "models" / name).is_file()]
    files += [root / name for name in SHIPPED_FILES]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ReleaseError(f"files the release needs are missing: {', '.join(missing)}")
    return sorted(((p, p.relative_to(root).as_posix()) for p in files), key=lambda item: item[1])


def release_members(root: str | os.PathLike = ROOT, large_file_limit: int = LARGE_FILE_LIMIT) -> list[tuple[Path, str]]:
    """The files the zip holds: (source path, archive path under ``chest_xray_ssl_multitask/``), sorted.

    Files over ``large_file_limit`` bytes are left out (see ``large_files``); the generated ``large_files.yml``
    is not listed, as it has no source file.
    """
    return [
        (path, f"{BUNDLE_NAME}/{rel}") for path, rel in candidate_files(root) if path.stat().st_size <= large_file_limit
    ]


def large_files(root: str | os.PathLike = ROOT, large_file_limit: int = LARGE_FILE_LIMIT) -> list[tuple[Path, str]]:
    """The files over ``large_file_limit`` bytes: (source path, path relative to the bundle root), sorted."""
    return [(path, rel) for path, rel in candidate_files(root) if path.stat().st_size > large_file_limit]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the zoo's large_files.yml hash type, not a security measure
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def large_files_yaml(files: list[tuple[Path, str]], url_base: str = DEFAULT_URL_BASE) -> str:
    """``large_files.yml`` in the zoo's format for (source path, bundle-relative path) pairs."""
    lines = ["large_files:"]
    for path, rel in files:
        lines += [
            f'- path: "{rel}"',
            f'  url: "{url_base.rstrip("/")}/{rel}"',
            f'  hash_val: "{_md5(path)}"',
            '  hash_type: "md5"',
        ]
    return "\n".join(lines) + "\n"


def _zip_info(arcname: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, whatever machine builds it
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    return info


def build_release(
    root: str | os.PathLike = ROOT,
    output_dir: str | os.PathLike | None = None,
    large_file_url_base: str = DEFAULT_URL_BASE,
    large_file_limit: int = LARGE_FILE_LIMIT,
) -> Path:
    """Write ``<output_dir>/chest_xray_ssl_multitask_v<version>.zip`` (default ``<root>/dist``); returns its path."""
    root = Path(root).resolve()
    version = release_version(root)
    output = Path(output_dir if output_dir is not None else root / "dist") / f"{BUNDLE_NAME}_v{version}.zip"
    entries: list[tuple[str, Path | bytes]] = [(arc, path) for path, arc in release_members(root, large_file_limit)]
    large = large_files(root, large_file_limit)
    if large:
        listing = large_files_yaml(large, large_file_url_base).encode()
        entries.append((f"{BUNDLE_NAME}/large_files.yml", listing))
    entries.sort(key=lambda entry: entry[0])
    with atomic_write(output, "wb") as f, zipfile.ZipFile(f, "w") as zf:
        for arcname, source in entries:
            data = source if isinstance(source, bytes) else source.read_bytes()
            zf.writestr(_zip_info(arcname), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return output


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry; returns the zip's path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle_root", default=str(ROOT), help="the bundle to release (default: this one)")
    parser.add_argument("--output_dir", default=None, help="folder of the zip (default: <bundle_root>/dist)")
    parser.add_argument(
        "--large_file_url_base",
        default=DEFAULT_URL_BASE,
        help="url prefix of the files listed in large_files.yml (a placeholder by default)",
    )
    args = parser.parse_args(argv)
    try:
        output = build_release(args.bundle_root, args.output_dir, args.large_file_url_base)
    except ReleaseError as e:
        parser.exit(1, f"release: {e}\n")
    with zipfile.ZipFile(output) as zf:
        names = zf.namelist()
    print(f"{output}: {len(names)} files, {output.stat().st_size / 2**20:.1f} MiB")
    for _, rel in large_files(args.bundle_root):
        print(f"  over 25 MB, left out and listed in large_files.yml: {rel}")
    return output


if __name__ == "__main__":
    main()
