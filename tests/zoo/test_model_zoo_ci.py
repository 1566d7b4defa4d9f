"""The MONAI model zoo's own CI on the release: a temporary zoo tree, its scripts run from the zoo root.

The tree is laid out as the zoo has it: ``ci/`` (copied unchanged from ../shared/reference/model-zoo-ci), the
unzipped release zip at ``models/chest_xray_ssl_multitask/``, ``models/model_info.json`` and the metadata schema
placed where ``ci/prepare_schema.py`` finds it offline. Then, as the zoo's premerge jobs do: ``prepare_schema.py``,
``verify_bundle.py -m min`` (CPU premerge), ``verify_bundle.py`` (full mode) and ``ci/unit_tests/runner.py`` with
our ``tests/zoo/ci/unit_tests/test_chest_xray_ssl_multitask.py``.

This venv has the bundle installed editable; the zoo's machines do not. Each script therefore runs with that
install hidden (its import finder dropped), so ``bundle`` resolves only from the zoo copy, as it would there; at exit
the process prints which file ``bundle`` came from.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.release import BUNDLE_NAME, build_release
from tests.conftest import ROOT
from tests.helpers import launch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
ZOO_CI = SHARED / "reference" / "model-zoo-ci"
SCHEMA = SHARED / "reference" / "monai" / "meta_schema_20240725.json"
UNIT_TEST = Path(__file__).resolve().parent / "ci" / "unit_tests" / f"test_{BUNDLE_NAME}.py"

pytestmark = [
    pytest.mark.skipif(
        not ZOO_CI.is_dir(), reason=f"the model zoo's CI scripts are not at {ZOO_CI} (../shared is absent)"
    ),
    pytest.mark.slow,  # the zoo's own runner: a release, its checks and its unit tests, each a process
]

# `python <script> <args>` without the editable install of this checkout, printing where `bundle` came from
ZOO_PYTHON = (
    "import atexit, runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]; "
    "atexit.register(lambda: print('BUNDLE_FILE=' + str(getattr(sys.modules.get('bundle'), '__file__', None)))); "
    "script = sys.argv[1]; sys.argv = sys.argv[1:]; "
    "runpy.run_path(script, run_name='__main__')"
)


def run_zoo(zoo: Path, script: str, *args: str, timeout: int = 900) -> str:
    """Run a zoo script from the zoo root (its folder first on the path, as ``python <script>`` has it)."""
    env = {"PYTHONPATH": str(zoo / Path(script).parent)}
    # -P (3.11+): no working-directory entry on sys.path, as with `python <script>`; the zoo root holds no package
    # of ours, so on 3.10 that entry is harmless
    cmd = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-c", ZOO_PYTHON, script, *args]
    proc = launch(cmd, cwd=zoo, env=env, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"python {script} {' '.join(args)} exited {proc.returncode}:\n{output[-8000:]}"
    return output


def bundle_origin(output: str) -> Path:
    lines = [line for line in output.splitlines() if line.startswith("BUNDLE_FILE=")]
    assert lines, output[-3000:]
    return Path(lines[-1].split("=", 1)[1])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A zoo tree holding the release, with the schema prepared by ci/prepare_schema.py."""
    zoo = tmp_path_factory.mktemp("model-zoo")
    shutil.copytree(ZOO_CI / "ci", zoo / "ci", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(UNIT_TEST, zoo / "ci" / "unit_tests" / UNIT_TEST.name)
    with zipfile.ZipFile(build_release(ROOT, tmp_path_factory.mktemp("dist"))) as zf:
        zf.extractall(zoo / "models")
    (zoo / "models" / "model_info.json").write_text("{}")
    schema_url = json.loads((ROOT / "configs" / "metadata.json").read_text())["schema"]
    assert schema_url.endswith("/" + SCHEMA.name), f"metadata schema {schema_url}: not the one placed offline"
    shutil.copy(SCHEMA, zoo / "models" / SCHEMA.name)
    output = run_zoo(zoo, "ci/prepare_schema.py", "--l", BUNDLE_NAME)
    assert f"prepared schema for:  {BUNDLE_NAME}" in output
    assert (zoo / "models" / BUNDLE_NAME / "eval" / "schema.json").read_bytes() == SCHEMA.read_bytes()
    return zoo


def assert_zoo_copy(zoo: Path, output: str) -> None:
    origin = bundle_origin(output)
    assert origin == zoo / "models" / BUNDLE_NAME / "bundle" / "__init__.py", f"bundle imported from {origin}"


def test_verify_bundle_min(zoo):
    """The CPU premerge check: required files, version in changelog (not in model_info.json), metadata schema."""
    output = run_zoo(zoo, "ci/verify_bundle.py", "-b", BUNDLE_NAME, "-m", "min")
    for line in (
        f"start verifying {BUNDLE_NAME}:",
        "directory is verified correctly.",
        "version and changelog are verified correctly.",
        "metadata format is verified correctly.",
    ):
        assert line in output, output[-4000:]


def test_verify_bundle_full(zoo):
    """Full mode (the zoo's GPU premerge): also properties, verify_net_in_out and ckpt_export of network_def."""
    output = run_zoo(zoo, "ci/verify_bundle.py", "-b", BUNDLE_NAME)
    for line in (
        "metadata format is verified correctly.",
        "properties are verified correctly.",
        "data shape is verified correctly.",
        "export weights into TorchScript module successfully.",
    ):
        assert line in output, output[-4000:]
    assert (zoo / "models" / BUNDLE_NAME / "models" / "verify_model.ts").is_file()
    assert_zoo_copy(zoo, output)


def test_unit_test_runner(zoo):
    """ci/unit_tests/runner.py runs test_chest_xray_ssl_multitask.py: train, eval, infer, none skipped."""
    output = run_zoo(zoo, "ci/unit_tests/runner.py", "-b", BUNDLE_NAME, "-v", "2")
    assert "Ran 3 tests" in output and "\nOK\n" in output, output[-6000:]
    order = [output.index(f"Starting test: test_{t}_config") for t in ("train", "eval", "infer")]
    assert order == sorted(order), "runner did not follow test_order"
    assert_zoo_copy(zoo, output)
