"""bundle.engines.progress: bars on a terminal only; plain per-iteration log lines otherwise."""

from __future__ import annotations

import sys

import torch
from ignite.engine import Engine

from bundle.engines.progress import TerminalProgressBar, is_terminal
from tests.conftest import ROOT, run_bundle, write_dataset


def tiny_engine() -> Engine:
    return Engine(lambda engine, batch: {"loss": torch.tensor(0.5)})


def test_terminal_detection_follows_stderr(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert is_terminal() is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert is_terminal() is True


def test_bar_is_drawn_only_when_enabled(capsys):
    TerminalProgressBar(enabled="false").attach(off := tiny_engine())
    off.run([0, 1, 2], max_epochs=1)
    assert "Iteration" not in capsys.readouterr().err
    TerminalProgressBar(enabled=True).attach(on := tiny_engine())
    on.run([0, 1, 2], max_epochs=1)
    assert "Iteration: [2/3]" in capsys.readouterr().err


def test_training_log_without_terminal_has_iteration_lines_and_no_bars(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=3)
    proc = run_bundle(
        "run",
        "--config_file",
        "configs/train.json",
        "--dataset_dir",
        str(tmp_path / "data"),
        "--image_size",
        "32",
        "--batch_size",
        "4",
        "--num_workers",
        "0",
        "--max_epochs",
        "1",
        "--ckpt_dir",
        str(tmp_path / "m"),
        "--output_dir",
        str(tmp_path / "e"),
        "--resume",
        "false",
        "--amp",
        "false",
        "--multi_label",
        "false",
        cwd=ROOT,
    )
    log = proc.stdout + proc.stderr
    assert "\r" not in log and "tqdm is not installed" not in log
    assert "Iter: 1/" in log  # MONAI's StatsHandler logs each iteration instead
    assert (tmp_path / "m" / "model.pt").is_file()  # lower-case booleans from the command line are understood
