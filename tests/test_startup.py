"""What MONAI refuses before any config runs ends in one message once ``make install`` wrote the start-up file.

The tests build an environment of their own (a venv that sees this one's packages) and install the file there as
the Makefile does (``python -m bundle.startup``), so that this environment is left as it is; then they run the
real commands.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from bundle import startup
from tests.helpers import ROOT, launch


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    """The Python of a fresh venv that imports this environment's packages and has the start-up file."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=False)
    exe = home / "bin" / "python"
    site = subprocess.run([exe, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    # read before the start-up file (site reads .pth files in name order), so numpy and MONAI import from it
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "00_environment.pth").write_text("\n".join(ours) + "\n")
    launch([exe, "-m", "bundle.startup"], env={"PYTHONPATH": str(ROOT)}, check=True)
    assert (Path(site) / startup.FILE).read_text() == startup.LINE
    return exe


def _bundle_run(python: Path, *args: str) -> subprocess.CompletedProcess:
    return launch([python, "-m", "monai.bundle", "run", *args], env={"PYTHONPATH": str(ROOT)}, timeout=300)


def test_a_missing_config_file_is_named_with_the_bundles_configs(python):
    proc = _bundle_run(python, "--config_file", "configs/trian.json")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert "--config_file configs/trian.json: no such config file (did you mean configs/train.json?)" in output
    assert "the bundle's configs are configs/evaluate.json, configs/inference.json," in output


def test_a_nested_id_under_a_missing_one_is_named_and_debug_keeps_the_traceback(python):
    args = ("--config_file", "configs/inference.json", "--validate#dataset#data", "[]")
    proc = _bundle_run(python, *args)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert "--validate#dataset#data: no such id in configs/inference.json" in output
    debug = _bundle_run(python, *args, "--debug", "true")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "KeyError" in debug.stderr


def test_a_tracking_monai_cannot_read_is_named(python):
    proc = _bundle_run(python, "--config_file", "configs/train.json", "--tracking", "mlfow")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert "--tracking mlfow: neither a tracker MONAI knows (mlflow) nor a tracking settings file" in output


def test_other_processes_keep_their_exception_hook(python):
    proc = launch([python, "-c", "import sys; print(sys.excepthook is sys.__excepthook__)"], check=True)
    assert proc.stdout.strip() == "True"


def test_monais_evaluation_warning_is_left_out_for_the_bundles_own_configs_only(python, tmp_path, monkeypatch):
    """MONAI warns on every run that a config's expressions are evaluated: said of the bundle's own configs, the
    paragraph is noise; said of any other config file, it stays."""
    missing = ["--ckpt_dir", str(tmp_path / "no_model")]  # each run stops at its settings check, before any work
    own = _bundle_run(python, "--config_file", "configs/inference.json", *missing)
    copy = tmp_path / "inference.json"
    copy.write_text((ROOT / "configs" / "inference.json").read_text())
    other = _bundle_run(python, "--config_file", str(copy), "--bundle_root", str(ROOT), *missing)
    assert own.returncode == other.returncode == 1
    assert "parsing config_file" not in own.stdout + own.stderr and "no_model" in own.stdout + own.stderr
    assert "parsing config_file" in other.stdout + other.stderr
    monkeypatch.chdir(ROOT)
    both = "['configs/train.json','configs/evaluate.json']"
    assert startup.own_config_files(["-m", "monai.bundle", "run", "--config_file", both]) == [
        "configs/train.json",
        "configs/evaluate.json",
    ]
    assert startup.own_config_files(["run", f"--config_file={copy}"]) is None
    assert startup.own_config_files(["run", "--config_file", "configs/nothing.json"]) is None
