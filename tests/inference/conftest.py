"""Fixtures of the inference tests: random weights, and the DICOM validator run on a written object."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bundle.atomic import atomic_save
from bundle.networks import MultiTaskNet
from tests.conftest import BACKBONE, CLASS_NAMES

DCIODVFY = "/usr/bin/dciodvfy"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A random-initialised checkpoint (inference only needs the right keys)."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    atomic_save(MultiTaskNet(len(CLASS_NAMES), BACKBONE).state_dict(), folder / "model.pt")
    return folder


def dciodvfy(path: str | os.PathLike) -> list[str]:
    """dicom3tools' validator on ``path``: fails the test on any line starting with "Error"; returns the warnings.

    Skips when the validator is missing, unless ``CI`` is set (CI installs it: ``make system-packages``).
    """
    tool = shutil.which("dciodvfy") or (DCIODVFY if os.path.exists(DCIODVFY) else None)
    if tool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("dciodvfy (dicom3tools) is missing; CI installs it with make system-packages")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    proc = subprocess.run([tool, os.fspath(path)], capture_output=True, text=True, timeout=60)
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, f"dciodvfy {path}: {errors}"
    assert not [line for line in lines if line.startswith("Abort")], lines
    return [line for line in lines if line.startswith("Warning")]
