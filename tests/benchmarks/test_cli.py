"""``python -m benchmarks``'s command line: each suite's flags and defaults, what ``all`` runs, and wrong input that
stops before any measuring with one message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.cli import SUITES, all_runs, build_parser
from benchmarks.cli import main as benchmark_main
from benchmarks.cli import suite_parser
from tests.helpers import run_module, script_in_process


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
    assert [k for k, _, _ in all_runs(build_parser().parse_args(["all"]))][-3:] == ["inference", "cache", "onnx"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["all", "--suites", "trian"])


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
        proc = run_module("benchmarks", *args, timeout=300)  # from the root: the flag error names no file
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


def test_the_onnx_suite_stays_on_the_cpu():
    """`all --device cuda` passes the device to every suite but onnx (onnxruntime's CPU provider against PyTorch on
    the CPU); asked for cuda directly, onnx stops with one message."""
    runs = {key: args for key, _, args in all_runs(build_parser().parse_args(["all", "--device", "cuda"]))}
    assert runs["onnx"].device is None and runs["inference"].device == "cuda" and runs["train"].device == "cuda"
    with pytest.raises(SystemExit, match="--device cuda: the onnx suite compares onnxruntime's CPU provider"):
        benchmark_main(["onnx", "--device", "cuda", *QUICK])


def test_cuda_without_cuda_is_one_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available"):
        benchmark_main(["inference", "--device", "cuda"])


def test_weights_of_another_model_are_named(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match=r"--ckpt .*other.pt: does not fit MultiTaskClassifier\(num_classes=4"):
        benchmark_main(["inference", "--ckpt", str(tmp_path / "other.pt"), *QUICK])
