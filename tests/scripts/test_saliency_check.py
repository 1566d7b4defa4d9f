"""scripts/saliency_check.py: the sanity check and the layer comparison end to end on data/sample, and bad arguments."""

from __future__ import annotations

import json

import pytest

from bundle.errors import run_main
from scripts import saliency_check
from tests.conftest import ROOT
from tests.helpers import script_in_process

SAMPLE = str(ROOT / "data" / "sample")


def run(tmp_path, *args: str) -> int:
    argv = ["--dataset_dir", SAMPLE, "--device", "cpu", "--out", str(tmp_path / "out"), *args]
    return run_main(saliency_check.main, argv)


def test_check_runs_end_to_end_and_writes_its_outputs(tmp_path, capsys):
    status = run(tmp_path, "--n_images", "3", "--batch_size", "3")
    out = tmp_path / "out"
    result = json.loads((out / "saliency_check.json").read_text())
    assert status == (0 if result["passed"] else 2)  # 2: the maps failed the check
    assert result["n_images"] == 3 and result["saliency_layer"] == "encoder.layer3+encoder.layer4"
    assert [s["step"] for s in result["steps"]][:3] == ["trained", "classifier", "encoder.layer4"]
    assert (out / "saliency_check.png").stat().st_size > 0
    assert "| 0 | none (control: trained vs itself) | 1.000" in (out / "saliency_check.md").read_text()
    printed = capsys.readouterr().out
    assert printed.count("spearman") >= 7  # a log line per step


def test_compare_layers_option(tmp_path):
    # at the shipped weights' 224 px (their recipe refuses another size): layer4 is a 7x7 grid
    args = ["--n_images", "2", "--timing_images", "2", "--repeats", "1", "--compare_layers", "encoder.layer4"]
    assert run(tmp_path, *args) == 0
    result = json.loads((tmp_path / "out" / "saliency_layers.json").read_text())
    assert [r["layer"] for r in result["rows"]] == ["encoder.layer4"] and result["n_masks"] == 2
    assert "`encoder.layer4` | 7x7 |" in (tmp_path / "out" / "saliency_layers.md").read_text()


def test_missing_weights_end_in_one_message(tmp_path):
    """The command line through the script's ``main`` here (tests/test_errors.py runs a real script's stop)."""
    missing = tmp_path / "nope.pt"
    proc = script_in_process(saliency_check.main, "--ckpt_file", str(missing), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and str(missing) in proc.stderr and "file not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--saliency_layer", "encoder.layer9"], "saliency_layer 'encoder.layer9' is not a module"),
        (["--saliency_layer", "encoder.layer3+"], "has an empty layer name"),
        (["--backbone", "resnet18"], "backbone: resnet18 given, the weights were made with resnet10"),
        (["--saliency", "rollout"], "--saliency / --compare_methods rollout: explains a ViT's attention, and resnet10"),
        (["--compare_methods", "attention_gradient"], "compare_methods attention_gradient: explains a ViT's attention"),
    ],
)
def test_bad_arguments_end_in_one_message(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, *args)
    message = str(e.value) if e.value.code != 1 else capsys.readouterr().err
    assert expected in message and "Traceback" not in message
