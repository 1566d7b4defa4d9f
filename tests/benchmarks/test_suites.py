"""The suites at toy sizes, in this process and as the command: every suite measures and reports both sides."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmarks.cli import SUITES, all_runs, build_parser, suite_parser
from benchmarks.report import REPORT_KEYS
from tests.conftest import write_dataset
from tests.helpers import run_module

TINY = ["--image_size", "32", "--batch_size", "4", "--warmup", "1", "--iters", "2"]
# fine-tuning with lung guidance: the same comparison, and the guidance's cost against the unguided plain loop
WORKFLOW_SUITES = {
    "train": ["--w_lung_guidance", "1"],
    "pretrain": ["--method", "simclr"],
    "inpainting": ["--method", "group_masked"],
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "data"
    write_dataset(root, n_per_class=3)
    return root


def check_report(report: dict, suite: str, figure: str, sides: set[str]) -> None:
    assert tuple(report) == REPORT_KEYS
    assert report["suite"] == suite and report["figure"] == figure
    assert set(report["throughput"]) == sides and all(v > 0 for v in report["throughput"].values())
    assert set(report["peak_memory_mb"]) == sides and all(v > 0 for v in report["peak_memory_mb"].values())
    assert report["value"] > 0 and math.isfinite(report["value"])
    assert {"device", "precision", "warmup", "iters", "batch_size", "image_size"} <= set(report["settings"])
    json.dumps(report)


@pytest.mark.slow  # each suite times warm-up and measured steps of a whole workflow, both sides
@pytest.mark.parametrize("suite", list(WORKFLOW_SUITES))
def test_benchmark_suite_runs_tiny(suite, tiny_data, tmp_path, monkeypatch):
    """Each workflow suite end to end at a toy size, from a directory other than the bundle root."""
    monkeypatch.chdir(tmp_path)
    flags = TINY + ["--num_workers", "0", "--dataset_dir", str(tiny_data)] + WORKFLOW_SUITES[suite]
    report = SUITES[suite].run(suite_parser(suite).parse_args(flags))
    assert os.getcwd() == str(tmp_path)  # a suite never changes directory: the configs need no bundle-root cwd
    check_report(report, suite, "ratio", {"bundle", "plain"})
    assert report["unit"] == ("views/s" if suite == "pretrain" else "images/s")
    assert report["settings"]["iters"] == 2 and report["settings"]["num_workers"] == 0
    # the data path alone (loader + prepare_batch, no model) sits next to the plain loop and the workflow
    data = report["details"]["data_path"]
    assert data["per_worker"] > 0 and data["all_workers"] > 0 and report["details"]["data_headroom"] > 0
    assert all(math.isfinite(v) for v in data.values())
    assert ("loader_per_worker" in data) == (suite != "train")  # pretraining makes its views on the device
    if suite == "train":
        guidance = report["details"]["lung_guidance"]
        assert guidance["w_lung_guidance"] == 1 and guidance["plain_unguided"] > 0 and guidance["cost"] > 0
        assert guidance["plain_guided"] == round(report["throughput"]["plain"], 2)


def test_inference_suite_runs_tiny(tmp_path, monkeypatch):
    """Saliency against a plain pass on the same batches: both throughputs and the cost ratio."""
    monkeypatch.chdir(tmp_path)
    report = SUITES["inference"].run(suite_parser("inference").parse_args(TINY + ["--saliency", "gradcam"]))
    check_report(report, "inference", "saliency_cost_ratio", {"plain", "saliency"})
    assert report["meaning"].startswith("saliency costs") and "lower is better" in report["meaning"]


def test_the_inference_suite_takes_the_speed_ids_of_inference_json(tmp_path, monkeypatch):
    """channels_last weights and the autocast dtype as configs/inference.json sets them on CUDA (`all` passes the
    flags on); on the CPU the suite runs fp32, as the config does."""
    monkeypatch.chdir(tmp_path)
    flags = TINY + ["--saliency", "gradcam", "--channels_last", "true", "--amp_dtype", "bfloat16", "--device", "cpu"]
    report = SUITES["inference"].run(suite_parser("inference").parse_args(flags))
    check_report(report, "inference", "saliency_cost_ratio", {"plain", "saliency"})
    assert report["settings"]["channels_last"] is True and report["settings"]["precision"] == "fp32"
    runs = all_runs(build_parser().parse_args(["all", "--suites", "inference", "--amp_dtype", "float16"]))
    assert [(key, args.amp_dtype) for key, _, args in runs] == [("inference", "float16")]


def test_onnx_suite_runs_tiny(tmp_path, monkeypatch, one_thread):
    """onnxruntime against PyTorch on the same batches: both throughputs and the speed-up, for both views."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements-deploy.txt)")
    monkeypatch.chdir(tmp_path)
    for view in ("classification", "segmentation"):
        args = suite_parser("onnx").parse_args(TINY + ["--view", view, "--backbone", "resnet10", "--threads", "1"])
        report = SUITES["onnx"].run(args)
        check_report(report, "onnx", "onnxruntime_speedup", {"pytorch", "onnxruntime"})
        assert report["settings"]["view"] == view and report["settings"]["threads"] == 1
        assert report["details"]["onnxruntime_threads"] == 1 and report["details"]["export_s"] > 0
    assert not list(tmp_path.iterdir())  # the exported file lived in a temporary folder


def test_the_command_writes_the_report(tmp_path):
    """`python -m benchmarks inference ... --json` from the repository root prints and writes the report."""
    out = tmp_path / "results" / "inference.json"
    args = ["inference", "--iters", "1", "--warmup", "0", "--image_size", "32", "--batch_size", "2", "--json", out]
    proc = run_module("benchmarks", *map(str, args), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results) == ["inference"]
    check_report(results["inference"], "inference", "saliency_cost_ratio", {"plain", "saliency"})
    assert "saliency_cost_ratio" in proc.stdout and "saliency costs" in proc.stdout


def test_a_namespace_built_in_code_is_checked_too():
    args = suite_parser("inference").parse_args([])
    args.iters = 0
    with pytest.raises(SystemExit, match="--iters must be an integer >= 1, got 0"):
        SUITES["inference"].run(args)
