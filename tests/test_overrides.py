"""An override of an id the configs do not define stops the run before any work, with one message naming it.

The real command runs once (``python -m monai.bundle run``, which prints no traceback); the other command lines
run in this interpreter through the same parser (``bundle_in_process``); ``bundle.workflow.run`` is checked
before it builds a workflow. Every case stops before a dataset is cached or a network built.
"""

from __future__ import annotations

import json

import pytest

from bundle import overrides, workflow
from bundle.errors import UserError
from tests.helpers import ROOT, bundle_in_process, run_bundle


def _config_arg(*names: str) -> str:
    paths = [str(ROOT / "configs" / f"{n}.json") for n in names]
    return paths[0] if len(paths) == 1 else "[" + ",".join(f"'{p}'" for p in paths) + "]"


def _stopped(proc) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    return output


def test_the_real_command_names_each_unknown_id_and_the_closest_known_ones(tmp_path):
    proc = run_bundle(
        "run", "--config_file", _config_arg("inference"), "--bundle_root", str(ROOT),
        "--output_dir", str(tmp_path / "out"), "--saliancy", "none", "--image_sizee", "64", cwd=tmp_path, check=False,
    )  # fmt: skip
    output = _stopped(proc)
    assert "2 ids given are not defined by" in output and "configs/inference.json" in output
    assert "--saliancy: did you mean saliency" in output and "--image_sizee: did you mean image_size?" in output
    assert not (tmp_path / "out").exists()  # stopped before the run locked (and made) its output folder


# (configs, arguments, texts the message must hold)
CASES = {
    "train: a misspelt id": (
        ("train",),
        ["--max_epoch", "2"],
        ["--max_epoch: no such setting in", "did you mean max_epochs"],
    ),
    "pretraining: an id removed in 0.9.2": (
        ("pretrain_contrastive",),
        ["--views_on", "device"],
        ["--views_on: no such setting", "removed in 0.9.2", "made batched on the training device"],
    ),
    "evaluate: a nested id that does not exist": (
        ("train", "evaluate"),
        ["--train#trainer#max_epoch", "2"],
        ["--train#trainer#max_epoch: no such id", "did you mean train#trainer#max_epochs"],
    ),
    "multi-GPU overlay: a misspelt id, before the process group": (
        ("train", "multi_gpu_train"),
        ["--sync_batchnorm", "true"],
        ["--sync_batchnorm: no such setting", "did you mean sync_batch_norm?"],
    ),
}
# every workflow of the bundle, overlays included
WORKFLOWS = [
    ("train",), ("train", "evaluate"), ("inference",), ("pretrain_contrastive",), ("pretrain_inpainting",),
    ("pretrain_pretext",), ("pretrain_curriculum",), ("train", "multi_gpu_train"),
    ("pretrain_contrastive", "multi_gpu_pretrain"), ("train", "evaluate", "multi_gpu_evaluate"),
    ("inference", "inference_trt"),
]  # fmt: skip
for configs in WORKFLOWS:
    CASES["+".join(configs)] = (configs, ["--debugg", "true"], ["--debugg: no such setting", "did you mean debug?"])


@pytest.mark.parametrize("case", list(CASES))
def test_an_unknown_id_stops_the_command(case, tmp_path):
    configs, args, expected = CASES[case]
    proc = bundle_in_process("run", "--config_file", _config_arg(*configs), "--bundle_root", str(ROOT), *args)
    output = _stopped(proc)
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"


def test_known_ids_nested_ones_and_runner_arguments_pass_to_the_settings_check(tmp_path):
    # every argument below is known; the run then stops at the bad value, in the settings check
    proc = bundle_in_process(
        "run", "--config_file", _config_arg("train", "evaluate"), "--bundle_root", str(ROOT),
        "--meta_file", str(ROOT / "configs/metadata.json"), "--run_id", "run", "--workflow_type", "train",
        "--validate#dataset#data", "[]", "--train#trainer#max_epochs", "1", "--+train#handlers", "[]",
        "--network_def#_requires_", "[]", "--batch_size", "0",
    )  # fmt: skip
    output = _stopped(proc)
    assert "batch_size: 0" in output and "no such" not in output


def test_args_file_ids_count_as_overrides(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": _config_arg("inference"), "label_fracton": 0.1}))
    output = _stopped(bundle_in_process("run", "--args_file", str(args), "--bundle_root", str(ROOT)))
    assert "--label_fracton: no such setting in" in output


def test_in_process_runs_are_checked_before_the_workflow_is_built():
    with pytest.raises(UserError, match=r"^saliancy: no such setting in .*inference.json; did you mean saliency"):
        workflow.run("inference", {"saliancy": "none"})
    with pytest.raises(UserError, match=r"no such config file \(did you mean .*configs/train.json\?\)"):
        workflow.parsed("configs/trian.json", None, "max_epochs")


def test_a_tracking_monai_cannot_read_is_named(tmp_path):
    main = "/env/site-packages/monai/bundle/__main__.py"
    train = str(ROOT / "configs" / "train.json")
    message = overrides.command_line_problem([main, "run", "--config_file", train, "--tracking", "mlfow"])
    assert message == (
        "--tracking mlfow: neither a tracker MONAI knows (mlflow) nor a tracking settings file; did you mean "
        "--tracking mlflow?"
    )
    settings = tmp_path / "tracking.json"
    settings.write_text("{}")
    for tracking in ("mlflow", str(settings)):  # MONAI's tracker, a settings file: its ids pass too
        argv = [main, "run", "--config_file", train, "--tracking", tracking, "--experiment_name", "x"]
        assert overrides.command_line_problem(argv) is None, tracking


def test_command_lines_are_read_as_python_fire_reads_them():
    main = "/env/site-packages/monai/bundle/__main__.py"
    line = overrides.command_line(
        [main, "run", "--config_file=c.json", "--max-epochs", "2", "--noamp", "--run_id", "run", "x", "--", "--help"]
    )
    assert line is not None and line.config_files == ["c.json"]
    assert line.values["max_epochs"] == 2 and line.values["amp"] is False and line.ids == ["max_epochs", "amp"]
    assert overrides.command_line(["pytest", "run", "--x", "1"]) is None  # another process: nothing to check
    assert overrides.command_line([main, "ckpt_export", "--x", "1"]) is None


def test_ids_are_known_where_the_config_defines_them():
    config = {"a": {"b": [{"c": 1}]}, "stages": [{"overrides": {}}], "saliency": "x"}
    names = ["a#b#0#c", "a::b", "+a", "_meta_#version", "a#b#0#_disabled_", "stages#0#overrides#anything"]
    assert overrides.unknown(config, names) == {}
    found = overrides.unknown(config, ["a#b#0#d", "a#x#c", "saliancy", "views_on"])
    assert found["saliancy"] == "did you mean saliency?" and "removed in 0.9.2" in found["views_on"]
    assert set(found) == {"a#b#0#d", "a#x#c", "saliancy", "views_on"}
