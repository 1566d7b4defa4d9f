"""scripts/prepare_dataset.py run as a user runs it: every wrong input ends in one message naming the option or
file, a non-zero exit status, and no traceback (unless CXR_DEBUG=1).

The debug run is the real command; the wrong inputs run the script's ``main`` in this interpreter, as the script
does (``run_main``), which saves an interpreter start each.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bundle.prepare.cli import main
from tests.helpers import run_script, script_in_process

from .fixtures import write_dicom, write_image


def prepare_command(*args: str, cwd: Path, debug: bool = False) -> subprocess.CompletedProcess:
    """The real command, ``python scripts/prepare_dataset.py <args>`` (``CXR_DEBUG=1`` with ``debug``)."""
    return run_script("prepare_dataset.py", *args, cwd=cwd, env={"CXR_DEBUG": "1"} if debug else None, timeout=120)


def prepare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The same command line through the script's ``main`` in this interpreter."""
    return script_in_process(main, *args, cwd=cwd)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Two class folders of two PNGs, a text file, a binary file and a CSV with the wrong columns."""
    for cls in ("normal", "covid"):
        for i in range(2):
            write_image(tmp_path / "src" / cls / f"{i}.png")
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "wrong.csv").write_text("patient,img\n1,a.png\n")
    return tmp_path


CASES = {
    "src is a file": (["folders", "--src", "a_file.txt", "--out", "o"], 2, ["--src", "a_file.txt", "not a folder"]),
    "src missing": (["folders", "--src", "nope", "--out", "o"], 2, ["--src", "nope", "not found"]),
    "out under a file": (["folders", "--src", "src", "--out", "a_file.txt/o"], 2, ["--out", "a_file.txt"]),
    "out is a file": (["folders", "--src", "src", "--out", "a_file.txt"], 2, ["--out", "is a file"]),
    "cache-dir under a file": (
        ["folders", "--src", "src", "--out", "o", "--cache-dir", "a_file.txt/c"],
        2,
        ["--cache-dir", "a_file.txt"],
    ),
    "cache-dir is src": (
        ["folders", "--src", "src", "--out", "o", "--cache-dir", "./src/"],
        2,
        ["--cache-dir", "overwrite the source images"],
    ),
    "workers 0": (["folders", "--src", "src", "--out", "o", "--workers", "0"], 2, ["--workers", ">= 1"]),
    "negative cache size": (
        ["folders", "--src", "src", "--out", "o", "--cache-dir", "c", "--cache-size", "-5"],
        2,
        ["--cache-size", ">= 8"],
    ),
    "fraction out of range": (
        ["folders", "--src", "src", "--out", "o", "--val-fraction", "1.5"],
        2,
        ["--val-fraction"],
    ),
    "fractions sum to 1": (
        ["folders", "--src", "src", "--out", "o", "--val-fraction", "0.5", "--test-fraction", "0.5"],
        2,
        ["--val-fraction", "--test-fraction", "below 1"],
    ),
    "unknown layout": (["kermany", "--src", "src", "--out", "o"], 2, ["kermany", "folders"]),
    "unknown class": (
        ["folders", "--src", "src", "--out", "o", "--classes", "pneumonia"],
        2,
        ["--classes", "pneumonia"],
    ),
    "bad regex": (["folders", "--src", "src", "--out", "o", "--patient-regex", "(p"], 2, ["--patient-regex", "'(p'"]),
    "official test without one": (["folders", "--src", "src", "--out", "o", "--official-test"], 2, ["--official-test"]),
    "binary label file": (
        ["chexpert", "--src", "src", "--out", "o", "--csv", "../binary.csv"],
        2,
        ["binary.csv", "not a text file"],
    ),
    "label file with wrong columns": (
        ["chexpert", "--src", "src", "--out", "o", "--csv", "../wrong.csv"],
        2,
        ["wrong.csv", "'Path'", "not in the header"],
    ),
    "missing label file": (["covidx", "--src", "src", "--out", "o", "--label-files", "nope.txt"], 2, ["nope.txt"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_input_ends_in_one_message(case, source):
    args, status, named = CASES[case]
    proc = prepare(*args, cwd=source)
    output = proc.stdout + proc.stderr
    assert proc.returncode == status, output
    assert "Traceback" not in output
    for text in named:
        assert text in output, (text, output)
    assert not (source / "o" / "datalist.json").exists()


def test_cache_dir_on_src_leaves_the_source_images_alone(source):
    before = {p: p.read_bytes() for p in (source / "src").rglob("*.png")}
    proc = prepare("folders", "--src", "src", "--out", "o", "--cache-dir", "src", cwd=source)
    assert proc.returncode == 2 and "--cache-dir" in proc.stderr
    assert {p: p.read_bytes() for p in (source / "src").rglob("*.png")} == before


def test_unknown_dicom_keyword_is_named_not_every_file_unreadable(tmp_path):
    write_dicom(tmp_path / "dicoms" / "a.dcm", accession="A1")
    proc = prepare("dicom", "--src", "dicoms", "--out", "o", "--key-tag", "Accesion", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--key-tag 'Accesion' is not a DICOM keyword" in proc.stderr


def test_debug_mode_shows_the_traceback(source):
    proc = prepare_command("folders", "--src", "src", "--out", "o", "--patient-regex", "(p", cwd=source, debug=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "--patient-regex" in proc.stderr
