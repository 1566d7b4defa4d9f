"""bundle.errors: a user's mistake ends in one message and exit status 1; debug mode brings the traceback back."""

from __future__ import annotations

import sys

import pytest

from bundle import errors
from tests.helpers import launch


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    for name in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    errors.set_debug(False)
    yield
    errors.set_debug(False)


def test_fail_is_a_system_exit_whose_code_is_the_message():
    with pytest.raises(SystemExit) as err:
        errors.fail("batch_size: 0 must be an integer >= 1")
    assert isinstance(err.value, errors.UserError) and not isinstance(err.value, Exception)
    assert err.value.code == str(err.value) == "batch_size: 0 must be an integer >= 1"


@pytest.mark.parametrize("how", ["set_debug", "CXR_DEBUG", "MONAI_DEBUG_CONFIG"])
def test_debug_mode_raises_an_ordinary_exception_with_its_cause(how, monkeypatch):
    if how == "set_debug":
        errors.set_debug(True)
    else:
        monkeypatch.setenv(how, "1")
    cause = OSError("disk full")
    with pytest.raises(errors.DebugUserError, match="cannot write") as err:
        errors.fail("cannot write x", cause)
    assert err.value.__cause__ is cause


def test_a_script_ends_in_one_line_and_status_1():
    code = (
        "from bundle.errors import run_main\ndef main(argv): raise ValueError('--out x: not a folder')\nrun_main(main)"
    )
    proc = launch([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == "error: --out x: not a folder\n"


def test_a_bug_keeps_its_traceback():
    code = "from bundle.errors import run_main\ndef main(argv): raise TypeError('a bug')\nrun_main(main)"
    proc = launch([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "TypeError: a bug" in proc.stderr
