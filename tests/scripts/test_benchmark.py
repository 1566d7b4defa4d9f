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

from scripts.bench import REPORT_KEYS, SUITES, all_runs, build_parser, harness
from scripts.bench import main as benchmark_main
from scripts.bench import suite_parser
from scripts.bench.harness import IterationTimer, speed_overrides
from tests.conftest import ROOT, write_dataset
from tests.helpers import launch, script_in_process

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


@pytest.mark.slow  # each suite times warm-up and measured steps of a whole workflow, both sides
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
    # the data path alone (loader + prepare_batch, no model) sits next to the plain loop and the workflow
    data = report["details"]["data_path"]
    assert data["per_worker"] > 0 and data["all_workers"] > 0 and report["details"]["data_headroom"] > 0
    assert all(math.isfinite(v) for v in data.values())
    assert ("loader_per_worker" in data) == (report["settings"].get("views_on") == "device")


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
    proc = launch(command, cwd=tmp_path, timeout=300)
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


def test_all_runs_every_method_with_only_the_flags_given():
    """`all` covers fine-tuning, the four contrastive methods, MICLe and inpainting; a flag reaches a suite only
    when given, so each suite otherwise keeps its own default."""
    args = build_parser().parse_args(["all", "--suites", "train,pretrain,inpainting", "--image_size", "64"])
    runs = {key: (name, suite_args) for key, name, suite_args in all_runs(args)}
    methods = ["simclr", "moco", "byol", "simsiam", "micle"]
    assert list(runs) == ["train", *(f"pretrain:{m}" for m in methods), "inpainting"]
    assert [runs[f"pretrain:{m}"][1].method for m in methods] == ["simclr", "moco", "byol", "simsiam", "simclr"]
    assert runs["pretrain:micle"][1].multi_instance and not runs["pretrain:simclr"][1].multi_instance
    assert all(a.image_size == 64 for _, a in runs.values())
    assert runs["inpainting"][1].batch_size == 8 and runs["train"][1].batch_size == 16  # the suites' defaults
    assert all(a.channels_last is None and a.compile is None and a.amp_dtype is None for _, a in runs.values())
    assert [k for k, _, _ in all_runs(build_parser().parse_args(["all"]))][-2:] == ["inference", "cache"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["all", "--suites", "trian"])


def test_speed_flags_are_config_overrides_only_when_given(tmp_path, monkeypatch):
    """--channels_last / --compile / --amp_dtype set the config ids of those names; one a config lacks stops."""
    (tmp_path / "with.json").write_text(json.dumps({"channels_last": False, "compile": False, "amp_dtype": "float16"}))
    (tmp_path / "without.json").write_text(json.dumps({"amp": False}))
    monkeypatch.setattr(harness, "CONFIGS", tmp_path)
    parse = suite_parser("train").parse_args
    assert speed_overrides(parse([]), "without.json") == {}
    given = parse(["--channels_last", "true", "--compile", "no", "--amp_dtype", "BFloat16"])
    assert speed_overrides(given, "with.json") == {"channels_last": True, "compile": False, "amp_dtype": "bfloat16"}
    with pytest.raises(SystemExit, match="--channels_last: configs/without.json has no id channels_last"):
        speed_overrides(parse(["--channels_last", "true"]), "without.json")
    with pytest.raises(SystemExit):
        parse(["--amp_dtype", "int8"])


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


def benchmark_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return launch([sys.executable, ROOT / "scripts" / "benchmark.py", *args], cwd=cwd, timeout=300)


QUICK = ["--iters", "1", "--warmup", "0", "--image_size", "32", "--batch_size", "1"]
# (arguments, exit status, texts the message must hold); the command costs ~5-10 s of imports, so the real
# command runs one flag error, and the command line of the file error goes through main() in this process, as
# the script runs it (run_main); MAIN_CASES call main() directly
COMMAND_CASES = {
    "iters 0": (["inference", "--iters", "0"], 2, ["--iters: 0 must be an integer >= 1"]),
    "no datalist": (["train", "--dataset_dir", ".", *QUICK], 1, ["--dataset_dir", "no datalist.json"]),
}
REAL_COMMAND = "iters 0"
MAIN_CASES = {
    "image size not a multiple of 32": (["train", "--image_size", "48"], ["--image_size", "multiple of 32"]),
    "negative threads": (["all", "--threads", "-1"], ["--threads", ">= 0"]),
    "unknown backbone": (["inference", "--backbone", "resnet19"], ["--backbone", "resnet18"]),
    "bad datalist": (["pretrain", "--dataset_dir", "bad", *QUICK], ["--dataset_dir", "not readable JSON"]),
    "json is a folder": (["inference", "--json", ".", *QUICK], ["--json", "is a folder"]),
    "json under a file": (["inference", "--json", "notes.txt/out.json", *QUICK], ["--json", "is a file"]),
    "ckpt missing": (["inference", "--ckpt", "nope.pt", *QUICK], ["--ckpt nope.pt", "not found"]),
    "ckpt not weights": (["inference", "--ckpt", "notes.txt", *QUICK], ["--ckpt", "notes.txt"]),
}


@pytest.fixture
def wrong_files(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "notes.txt").write_text("not weights\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "datalist.json").write_text("{not json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("case", list(COMMAND_CASES))
def test_command_stops_before_measuring_with_one_message(case, wrong_files):
    """The real command: a non-zero status, one message naming the flag or file, no traceback, no report."""
    args, status, named = COMMAND_CASES[case]
    if case == REAL_COMMAND:
        proc = benchmark_command(*args, cwd=wrong_files)
    else:
        proc = script_in_process(benchmark_main, *args, cwd=wrong_files)
    output = proc.stdout + proc.stderr
    assert proc.returncode == status, output[-3000:]
    assert "Traceback" not in output and "==" not in proc.stdout
    for text in named:
        assert text in output, (text, output[-3000:])


@pytest.mark.parametrize("case", list(MAIN_CASES))
def test_wrong_input_stops_before_measuring(case, wrong_files, capsys):
    """argparse's usage error (exit 2) or bundle.errors.fail's one message (exit 1), before any measuring."""
    args, named = MAIN_CASES[case]
    with pytest.raises(SystemExit) as stop:
        benchmark_main(args)
    output = str(stop.value.code) + capsys.readouterr().err
    assert stop.value.code != 0
    for text in named:
        assert text in output, (text, output)


def test_cuda_without_cuda_is_one_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available"):
        benchmark_main(["inference", "--device", "cuda"])


def test_weights_of_another_model_are_named(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match=r"--ckpt .*other.pt: does not fit MultiTaskClassifier\(num_classes=4"):
        benchmark_main(["inference", "--ckpt", str(tmp_path / "other.pt"), *QUICK])


def test_a_namespace_built_in_code_is_checked_too():
    args = suite_parser("inference").parse_args([])
    args.iters = 0
    with pytest.raises(SystemExit, match="--iters must be an integer >= 1, got 0"):
        SUITES["inference"].run(args)
