"""bundle.engines.progress: bars on a terminal only; plain per-iteration log lines otherwise."""

from __future__ import annotations

import sys

import torch
from ignite.engine import Engine

from bundle.engines.progress import TerminalProgressBar, is_terminal


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


def test_training_log_without_terminal_has_iteration_lines_and_no_bars(trained_tiny):
    """The shared tiny run: its log went to a pipe, with the progress setting at its default."""
    assert "--show_progress" not in trained_tiny.proc.args
    log = trained_tiny.log
    assert "\r" not in log and "tqdm is not installed" not in log
    assert "Iter: 1/" in log  # MONAI's StatsHandler logs each iteration instead
    for flag in ("--resume", "--amp", "--multi_label"):
        assert trained_tiny.proc.args[trained_tiny.proc.args.index(flag) + 1] == "false"
    assert (trained_tiny.models / "model.pt").is_file()  # lower-case booleans from the command line are understood
