"""scripts/benchmark.py and its harness (scripts/bench) at toy sizes: every suite measures and reports both sides."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from scripts.bench import REPORT_KEYS, SUITES, build_parser, suite_parser
from scripts.bench.harness import IterationTimer
from tests.conftest import ROOT, write_dataset

TINY = ["--image_size", "32", "--batch_size", "4", "--warmup", "1", "--iters", "2"]
WORKFLOW_SUITES = {"train": [], "pretrain": ["--method", "simclr"], "inpainting": ["--method", "group_masked"]}


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


@pytest.mark.parametrize("suite", list(WORKFLOW_SUITES))
def test_benchmark_suite_runs_tiny(suite, tiny_data, tmp_path, monkeypatch):
    """Each workflow suite end to end at a toy size, from a directory other than the bundle root."""
    monkeypatch.chdir(tmp_path)
    flags = TINY + ["--num_workers", "0", "--dataset_dir", str(tiny_data)] + WORKFLOW_SUITES[suite]
    report = SUITES[suite].run(suite_parser(suite).parse_args(flags))
    assert os.getcwd() == str(tmp_path)  # the harness never changes directory: the configs need no bundle-root cwd
    check_report(report, suite, "ratio", {"bundle", "plain"})
    assert report["unit"] == ("views/s" if suite == "pretrain" else "images/s")
    assert report["settings"]["iters"] == 2 and report["settings"]["num_workers"] == 0


def test_inference_suite_runs_tiny(tmp_path, monkeypatch):
    """Saliency against a plain pass on the same batches: both throughputs and the cost ratio."""
    monkeypatch.chdir(tmp_path)
    report = SUITES["inference"].run(suite_parser("inference").parse_args(TINY + ["--saliency", "gradcam"]))
    check_report(report, "inference", "saliency_cost_ratio", {"plain", "saliency"})
    assert report["meaning"].startswith("saliency costs") and "lower is better" in report["meaning"]


def test_command_line_from_another_directory(tmp_path):
    """`python scripts/benchmark.py inference ... --json` works from any working directory and writes the report."""
    out = tmp_path / "results" / "inference.json"
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "inference", "--iters", "1", "--warmup", "0"]
    command += ["--image_size", "32", "--batch_size", "2", "--json", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results) == ["inference"]
    check_report(results["inference"], "inference", "saliency_cost_ratio", {"plain", "saliency"})
    assert "saliency_cost_ratio" in proc.stdout and "saliency costs" in proc.stdout


def test_every_suite_takes_the_shared_flags():
    for name in SUITES:
        args = suite_parser(name).parse_args(["--device", "cpu", "--warmup", "0", "--iters", "3", "--json", "x.json"])
        assert (args.device, args.warmup, args.iters, args.json) == ("cpu", 0, 3, "x.json"), name
    args = build_parser().parse_args(["all", "--json", "out.json"])
    assert (args.suite, args.json, args.device) == ("all", "out.json", None)
    assert suite_parser("inpainting").parse_args([]).batch_size == 8  # per-suite defaults may differ
    with pytest.raises(SystemExit):
        suite_parser("inpainting").parse_args(["--method", "blocks"])  # a mask mode, not an ssl_method


def test_iteration_timer_stops_the_engine():
    """Warm-up iterations are not timed, the timed ones are, and the engine stops right after them."""
    engine = Engine(lambda engine, batch: None)
    timer = IterationTimer(torch.device("cpu"), warmup=2, iters=3, items=len)
    timer.attach(engine)
    engine.run([[0, 1, 2]] * 10, max_epochs=1)
    assert engine.state.iteration == 5 and len(timer.timed) == 3
    assert timer.throughput() > 0 and all(n == 3 for _, n in timer.timed)


def test_iteration_timer_reports_a_short_run():
    engine = Engine(lambda engine, batch: None)
    timer = IterationTimer(torch.device("cpu"), warmup=2, iters=3, items=len)
    timer.attach(engine)
    engine.run([[0]] * 4, max_epochs=1)
    with pytest.raises(RuntimeError, match="only 4 iterations ran"):
        timer.throughput()
