"""docs/inference.md's plain-PyTorch script: the TorchScript export, read with torch, numpy, pillow and pydicom only,
gives the bundle's probabilities on real PNG and DICOM files. The test runs the block of the page itself, so the
page cannot drift from what works."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.inference.dicom_source import radiograph_to_dicom
from bundle.inference.predictor import DEFAULT_WEIGHTS, load_model
from tests.conftest import ROOT, SHARED_CXR, run_bundle
from tests.helpers import launch
from tests.inference.test_inference import write_dicom

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} is absent (make weights)")

DOC = ROOT / "docs" / "inference.md"
SECTION = "### Without MONAI: the TorchScript export"
SAMPLE = ROOT / "data" / "sample" / "images"
SAMPLE_IMAGES = ["kermany_train_IM-0467-0001.png", "crdviral_Viral-Pneumonia-103.png", "hannover_0a7faa2a.png"]
# the script runs with these imports refused, so that it cannot lean on them
BLOCKED = ("monai", "bundle")
RUNNER = (
    "import runpy, sys\n"
    f"sys.modules.update(dict.fromkeys({BLOCKED!r}))  # a None entry makes the import fail\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def doc_script() -> str:
    """The python block of the page's TorchScript section."""
    section = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"{DOC.name}: expected one python block under {SECTION!r}, found {len(blocks)}"
    return blocks[0]


def inputs(folder: Path) -> list[Path]:
    """Real radiographs: sample PNGs, DICOMs of their pixels (DX of 12 bits with a window, MONOCHROME1 with
    inverted values, a non-square cut), and the real collection's first images when present."""
    folder.mkdir()
    paths = []
    for name in SAMPLE_IMAGES:
        paths.append(folder / name)
        shutil.copy(SAMPLE / name, paths[-1])
    pixels = np.asarray(Image.open(SAMPLE / SAMPLE_IMAGES[0]))
    radiograph_to_dicom(pixels.astype(np.float32) / 255, folder / "dx12.dcm", patient_id="P1")
    write_dicom(np.asarray(Image.open(SAMPLE / SAMPLE_IMAGES[1])), folder / "mono1.dcm", monochrome1=True)
    radiograph_to_dicom(np.asarray(Image.open(SAMPLE / SAMPLE_IMAGES[2]))[20:240], folder / "cut.dcm", patient_id="P2")
    paths += [folder / "dx12.dcm", folder / "mono1.dcm", folder / "cut.dcm"]
    if SHARED_CXR.is_dir():
        paths += sorted((SHARED_CXR / "images").glob("*.png"))[:3]
    return paths


def test_the_pages_torchscript_script_gives_the_bundles_probabilities(tmp_path):
    script = doc_script()
    assert not re.search(r"^\s*(import|from)\s+(monai|bundle)\b", script, flags=re.M)
    (tmp_path / "cxr_predict.py").write_text(script)
    ts = tmp_path / "model.ts"
    # the page's first export command, into a temporary folder
    run_bundle(
        "ckpt_export", "--net_id", "network_def", "--filepath", str(ts), "--ckpt_file", "models/model.pt",
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", timeout=300,
    )  # fmt: skip
    images = inputs(tmp_path / "images")
    proc = launch(
        [sys.executable, "-c", RUNNER, tmp_path / "cxr_predict.py", ts, *images], cwd=tmp_path, timeout=300, check=True
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = load_model(saliency=None).predict(images)
    assert [line["image"] for line in lines] == [str(p) for p in images]
    got = np.array([[line[c] for c in expected.class_names] for line in lines])
    diff = np.abs(got - expected.probabilities)
    assert diff.max() <= 1e-4, f"largest difference {diff.max():.2e} ({images[int(diff.max(1).argmax())].name})"
