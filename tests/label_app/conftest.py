"""The MONAI Label tests need the environment ``make label-env`` builds: CI must have it; elsewhere they skip.
The PACS tests also need Orthanc (``orthanc``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from label_app.client import LABEL_PYTHON, free_port
from label_app.pacs import DICOMWEB_PLUGIN, ORTHANC, Orthanc


@pytest.fixture(autouse=True, scope="module")
def label_environment() -> None:
    if LABEL_PYTHON.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{LABEL_PYTHON} is missing in CI: .ci/run must run `make label-env` first", pytrace=False)
    pytest.skip(f"MONAI Label environment not built ({LABEL_PYTHON}); `make label-env` builds it")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    """An Orthanc archive with DICOMweb on free loopback ports, its storage in a tmp folder, stopped by PID.

    Skips where Orthanc is not installed, unless CI is set (CI installs it: `make system-packages`).
    """
    if not (ORTHANC.exists() and DICOMWEB_PLUGIN.exists()):
        missing = ORTHANC if not ORTHANC.exists() else DICOMWEB_PLUGIN
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is missing in CI: .ci/run must run `make system-packages` first", pytrace=False)
        pytest.skip(f"{missing} not installed; `make system-packages` installs Orthanc and its DICOMweb plugin")
    with Orthanc(tmp_path_factory.mktemp("orthanc"), http_port=free_port()) as archive:
        yield archive
