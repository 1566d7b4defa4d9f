"""Every layout's prepared fixture trains for one epoch with configs/train.json, using the printed command."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from tests.helpers import launch

from .fixtures import run
from .test_chexpert import chexpert
from .test_covidx import covidx
from .test_dicom import hospital
from .test_folders import covid_radiography
from .test_nih import nih
from .test_rsna import rsna
from .test_siim import siim

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (ROOT / "configs" / "train.json").is_file(), reason="configs/train.json does not exist yet"
)
SMALL = ["--max_epochs", "1", "--image_size", "32", "--batch_size", "4", "--num_workers", "0"]

# `python -m monai.bundle <command>` is fire over monai.bundle's functions; doing the same in one process for
# every dataset parses the printed command exactly as the shell would, without paying MONAI's import 7 times.
DRIVER = """
import json, sys
import fire
import monai.bundle.__main__ as cli
for argv in json.loads(sys.argv[1]):
    fire.Fire(cli, command=argv)
    print("trained:", argv[argv.index("--dataset_dir") + 1], flush=True)
"""


def prepare_all(tmp: Path) -> dict[str, Path]:
    """One prepared folder per layout (folders through the cache, with masks)."""
    outs = {}

    def prep(layout: str, src: Path, *extra: str) -> None:
        outs[layout] = tmp / f"{layout}-out"
        run(layout, src, outs[layout], *extra)

    prep(
        "folders",
        covid_radiography(tmp / "folders"),
        "--cache-dir",
        str(tmp / "folders-out" / "cache"),
        "--cache-size",
        "32",
    )
    prep("covidx", covidx(tmp / "covidx"))
    prep("rsna-pneumonia", rsna(tmp / "rsna"))
    prep("nih", nih(tmp / "nih"))
    prep("chexpert", chexpert(tmp / "chexpert"), "--findings", "Cardiomegaly", "Edema", "Support Devices")
    prep("siim-covid", siim(tmp / "siim"))
    src, labels = hospital(tmp / "dicom")
    prep("dicom", src, "--labels", str(labels), "--label-column", "finding")
    return outs


@pytest.mark.slow  # seven trainings, one per layout
def test_every_layout_trains_one_epoch(tmp_path):
    commands = []
    for out in prepare_all(tmp_path).values():
        command = json.loads((out / "summary.json").read_text())["train_command"]
        argv = shlex.split(command)
        assert argv[:4] == ["python", "-m", "monai.bundle", "run"], command
        commands.append(argv[3:] + SMALL + ["--ckpt_dir", str(out / "models"), "--output_dir", str(out / "eval")])
    proc = launch([sys.executable, "-c", DRIVER, json.dumps(commands)], env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.count("trained:") == len(commands)
    for argv in commands:
        ckpt_dir = Path(argv[argv.index("--ckpt_dir") + 1])
        assert (ckpt_dir / "model.pt").is_file(), f"no model.pt after training on {ckpt_dir.parent.name}"
