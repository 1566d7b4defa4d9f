"""scripts/label_server.py, run as ``python -m scripts.label_server`` from the repository root: its command line
over ``label_app.client`` (the real measurement starts a server: tests/label_app drive the same client)."""

from __future__ import annotations

import pytest

from tests.helpers import run_module


def test_the_command_line_imports_the_client_from_the_root():
    proc = run_module("scripts.label_server", "measure", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(flag in proc.stdout for flag in ("--calls", "--epochs", "--json"))
    proc = run_module("scripts.label_server", "load", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(flag in proc.stdout for flag in ("--model", "--clients", "--seconds", "--app", "--conf"))


def test_measure_without_the_label_environment_is_one_message(tmp_path, monkeypatch):
    import scripts.label_server as label_server

    missing = tmp_path / "no-venv" / "bin" / "python"
    monkeypatch.setattr(label_server, "LABEL_PYTHON", missing)
    with pytest.raises(
        SystemExit, match=f"{missing} not found: build the MONAI Label environment with `make label-env`"
    ):
        label_server.measure()
