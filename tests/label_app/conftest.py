"""The MONAI Label tests need the environment ``make label-env`` builds: CI must have it; elsewhere they skip."""

from __future__ import annotations

import os

import pytest

from label_app.client import LABEL_PYTHON


@pytest.fixture(autouse=True, scope="module")
def label_environment() -> None:
    if LABEL_PYTHON.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{LABEL_PYTHON} is missing in CI: .ci/run must run `make label-env` first", pytrace=False)
    pytest.skip(f"MONAI Label environment not built ({LABEL_PYTHON}); `make label-env` builds it")
