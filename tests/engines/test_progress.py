"""bundle.engines.progress: a bar on a terminal only; one line per epoch; a line a minute within long epochs."""

from __future__ import annotations

import logging
import sys
import warnings

import torch
from ignite.engine import Engine, Events

from bundle.engines import progress
from bundle.engines.progress import EpochSummary, IterationProgress, format_metric, is_terminal


def tiny_engine(requires_grad: bool = False) -> Engine:
    return Engine(lambda engine, batch: {"loss": torch.tensor(0.5 + batch, requires_grad=requires_grad)})


def test_terminal_detection_follows_stderr(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert is_terminal() is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert is_terminal() is True


def test_bar_is_drawn_only_when_asked_and_a_graphs_loss_draws_no_warning(capsys):
    IterationProgress(bar="false").attach(off := tiny_engine())
    off.run([0, 1, 2], max_epochs=1)
    assert "Iteration" not in capsys.readouterr().err
    IterationProgress(bar=True).attach(on := tiny_engine(requires_grad=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch warns when a loss that needs grad becomes a number
        on.run([0, 1, 2], max_epochs=1)
    assert "Iteration: [2/3]" in capsys.readouterr().err


def test_without_a_bar_a_line_only_when_the_interval_has_passed(caplog, monkeypatch):
    clock = iter(range(0, 1000, 25))  # 25 s per call: the epoch start, then one per iteration
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="bundle.engines.progress"):
        IterationProgress(bar=False, log_seconds=60).attach(engine := tiny_engine())
        engine.run([0, 1, 2, 3, 4, 5], max_epochs=1)
    lines = [r.getMessage() for r in caplog.records]
    # iterations end at 25, 50, 75, ... s: a line at 75 s (3 of 6) and 150 s (6 of 6), none in between
    assert lines == [
        "epoch 1/1: iteration 3/6, loss 2.5, about 75 s left in this epoch",
        "epoch 1/1: iteration 6/6, loss 5.5",
    ]
    caplog.clear()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="bundle.engines.progress"):
        IterationProgress(bar=False).attach(quick := tiny_engine())
        quick.run([0, 1, 2], max_epochs=2)
    assert not caplog.records  # short epochs: nothing but the epoch lines of EpochSummary


def test_epoch_summary_is_one_line_with_loss_validation_best_and_learning_rate(caplog):
    trainer = tiny_engine()
    validator = Engine(lambda engine, batch: None)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    values = iter([0.7, 0.6])

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):  # what ValidationHandler and the checkpointer do before the summary
        validator.state.epoch, validator.state.metrics = engine.state.epoch, {}
        validator.state.metrics.update(val_auc=next(values), val_dice=float("nan"), per_class=torch.ones(3))
        if engine.state.epoch == 1:
            engine.state.model_saved = (1, "/runs/a/model.pt")

    summary = EpochSummary(validator, optimizer, key_metric="val_auc")
    with caplog.at_level(logging.INFO, logger="bundle.engines.progress"):
        summary.attach(trainer)
        trainer.run([0, 1], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("epoch 1/2: train_loss 1 | val_auc 0.7 (best: model.pt saved), val_dice nan | lr 0.01 |")
    assert lines[1].startswith("epoch 2/2: train_loss 1 | val_auc 0.6, val_dice nan | lr 0.01 |")
    assert trainer.state.metrics["epoch_loss"] == 1.0  # mean of 0.5 and 1.5, for the handlers after it
    assert format_metric(torch.tensor(0.123456)) == "0.1235" and format_metric(float("nan")) == "nan"


def test_training_log_without_terminal_has_one_line_per_epoch_and_no_bars(trained_tiny):
    """The shared tiny run: its log went to a pipe, with the progress setting at its default."""
    assert "--show_progress" not in trained_tiny.proc.args
    log = trained_tiny.log
    assert "\r" not in log and "tqdm is not installed" not in log and "Iter: 1/" not in log
    epochs = [line.split(" - ")[-1] for line in log.splitlines() if " - bundle.engines.progress - " in line]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"], epochs
    assert all("train_loss " in e and "val_auc " in e and "lr " in e for e in epochs)
    for flag in ("--resume", "--amp", "--multi_label"):
        assert trained_tiny.proc.args[trained_tiny.proc.args.index(flag) + 1] == "false"
    assert (trained_tiny.models / "model.pt").is_file()  # lower-case booleans from the command line are understood
