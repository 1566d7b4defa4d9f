"""scripts/label_efficiency.py: every option is checked before the first step; a dry run writes the split and
prints the commands of the whole study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_dataset

SCRIPT = ROOT / "scripts" / "label_efficiency.py"


def study_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """``data/`` with a datalist (its images are never read by a failing run), a file, and a broken datalist."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "datalist.json").write_text(json.dumps({"training": []}))
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "datalist.json").write_text("{not json")
    return tmp_path


# (arguments after --data data --out out --dry_run, exit status, texts the message must hold)
CASES = {
    "label fraction 0": (["--label_fraction", "0"], 2, ["--label_fraction: 0 must be a number in (0, 1]"]),
    "label fraction above 1": (["--label_fraction", "1.5"], 2, ["--label_fraction: 1.5 must be a number in (0, 1]"]),
    "val fraction 1": (["--val_fraction", "1"], 2, ["--val_fraction", "[0, 1)"]),
    "fractions sum above 1": (
        ["--val_fraction", "0.5", "--test_fraction", "0.6"],
        2,
        ["--val_fraction 0.5 plus --test_fraction 0.6", "below 1"],
    ),
    "unknown method": (["--methods", "simclr", "simclear"], 2, ["--methods", "simclear", "inpainting_then_simclr"]),
    "image size": (["--image_size", "100"], 2, ["--image_size", "multiple of 32"]),
    "epochs 0": (["--finetune_epochs", "0"], 2, ["--finetune_epochs", ">= 1"]),
    "negative seed": (["--seeds", "0", "-1"], 2, ["--seeds: -1 must be an integer in [0, 4294967295]"]),
    "workers": (["--num_workers", "-2"], 2, ["--num_workers", ">= 0"]),
    "no datalist": (["--data", "nope"], 2, ["--data nope", "datalist.json"]),
    "data is a file": (["--data", "a_file"], 2, ["--data a_file", "not a folder"]),
    "out is a file": (["--out", "a_file"], 1, ["--out", "a_file is a file"]),
    "out under a file": (["--out", "a_file/study"], 1, ["--out", "a_file is a file"]),
    "datalist not JSON": (["--data", "broken"], 1, ["broken/datalist.json", "JSON"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_option_stops_before_any_step(case, folders):
    args, status, named = CASES[case]
    proc = study_command("--data", "data", "--out", "out", "--dry_run", *args, cwd=folders)
    output = proc.stdout + proc.stderr
    assert proc.returncode == status, output
    assert "Traceback" not in output
    for text in named:
        assert text in output, (text, output)
    assert not (folders / "out" / "split_datalist.json").exists() and "[run ]" not in output


def test_dry_run_writes_the_split_and_prints_every_command(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=4)
    args = ["--data", "data", "--out", "study", "--dry_run", "--methods", "scratch", "simclr", "--seeds", "0", "1"]
    proc = study_command(*args, "--label_fraction", "1", "--image_size", "32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    split = json.loads((tmp_path / "study" / "split_datalist.json").read_text())
    assert {"training", "validation", "test"} <= set(split) and split["test"]
    commands = json.loads((tmp_path / "study" / "results.json").read_text())["commands"]
    # one pretraining (scratch has none), then per method and seed a fine-tuning and a test run
    assert len(commands) == 1 + 2 * 2 * 2
    assert "--label_fraction 1 " in commands[-1] and "--image_size 32" in commands[0]
