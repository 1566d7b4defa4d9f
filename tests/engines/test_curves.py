"""bundle.engines.curves: the per-epoch training log and its picture, continued on resume, written by rank 0."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

import bundle.engines.curves as curves_module
from bundle.engines.curves import TrainingCurves, read_log
from bundle.engines.progress import EpochSummary

FIELDS = ["epoch", "train_loss", "val_auc", "val_accuracy", "val_dice", "lr"]
AUC = {1: 0.6, 2: 0.8, 3: 0.7, 4: 0.9, 5: 0.85}


def make_trainer(output_dir, validate_every: int = 1) -> tuple[Engine, TrainingCurves]:
    """A trainer whose iteration losses are ``epoch`` and ``epoch + 2`` (mean ``epoch + 1``) and a validator run
    every ``validate_every`` epochs whose metrics follow ``AUC``; the learning rate halves each epoch."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    trainer = Engine(lambda e, b: {"loss": torch.tensor(float(e.state.epoch + 2 * b))})
    validator = Engine(lambda e, b: None)

    @validator.on(Events.STARTED)
    def metrics(engine):
        epoch = trainer.state.epoch
        engine.state.metrics = {"val_auc": AUC[epoch], "val_accuracy": 0.5, "val_dice": torch.tensor([0.7])}

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate_and_decay(engine):  # the ValidationHandler and the schedule, attached before the curves
        if engine.state.epoch % validate_every == 0:
            validator.run([0])
        optimizer.param_groups[0]["lr"] *= 0.5

    EpochSummary(validator, optimizer).attach(trainer)  # the epoch's mean loss, as configs/train.json lists it
    handler = TrainingCurves(str(output_dir), validator=validator, optimizer=optimizer)
    handler.attach(trainer)
    return trainer, handler


def rows_of(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_epoch_with_the_mean_loss_the_validation_and_the_learning_rate(tmp_path):
    trainer, _ = make_trainer(tmp_path)
    trainer.run([0, 1], max_epochs=3)
    rows = rows_of(tmp_path / "training_log.csv")
    assert list(rows[0]) == FIELDS
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["train_loss"]) for r in rows] == [2.0, 3.0, 4.0]  # mean of epoch and epoch + 2
    assert [float(r["val_auc"]) for r in rows] == [0.6, 0.8, 0.7]
    assert float(rows[0]["val_dice"]) == pytest.approx(0.7) and float(rows[2]["val_accuracy"]) == 0.5
    assert [float(r["lr"]) for r in rows] == [0.1, 0.05, 0.025]  # the rate used during the epoch
    picture = Image.open(tmp_path / "training_curves.png")
    assert picture.format == "PNG" and picture.size[0] > 800


def test_epochs_without_validation_have_empty_metric_cells(tmp_path):
    trainer, _ = make_trainer(tmp_path, validate_every=2)
    trainer.run([0, 1], max_epochs=3)
    rows = rows_of(tmp_path / "training_log.csv")
    assert [(r["epoch"], r["val_auc"]) for r in rows] == [("1", ""), ("2", "0.8"), ("3", "")]
    assert math.isnan(read_log(tmp_path / "training_log.csv", FIELDS)[0]["val_auc"])


def test_resumed_run_continues_the_log_and_replaces_later_rows_of_the_earlier_run(tmp_path):
    first, _ = make_trainer(tmp_path)
    first.run([0, 1], max_epochs=3)
    resumed, handler = make_trainer(tmp_path)
    # what TrainingCheckpointer restores: the run continues after epoch 2 (epoch 3 of the log is replaced)
    resumed.load_state_dict({"epoch": 2, "epoch_length": 2, "max_epochs": 5})
    resumed.run([0, 1])
    rows = rows_of(tmp_path / "training_log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [float(r["val_auc"]) for r in rows] == [0.6, 0.8, 0.7, 0.9, 0.85]
    assert float(rows[3]["train_loss"]) == 5.0 and float(rows[0]["lr"]) == 0.1
    assert handler.rows[-1]["epoch"] == 5


def test_a_run_started_over_begins_a_new_log(tmp_path):
    (tmp_path / "training_log.csv").write_text(
        "epoch,train_loss,val_auc,val_accuracy,val_dice,lr\n" + "".join(f"{e},9,0.1,0.1,0.1,1\n" for e in range(1, 8))
    )
    trainer, _ = make_trainer(tmp_path)
    trainer.run([0, 1], max_epochs=2)
    assert [(r["epoch"], r["train_loss"]) for r in rows_of(tmp_path / "training_log.csv")] == [("1", "2"), ("2", "3")]


def test_an_unreadable_log_is_begun_anew_with_a_warning(tmp_path, caplog):
    (tmp_path / "training_log.csv").write_text("epoch,train_loss\n1,not-a-number\n")
    trainer, _ = make_trainer(tmp_path)
    trainer.run([0, 1], max_epochs=1)
    assert "cannot read the training log" in caplog.text
    assert [r["epoch"] for r in rows_of(tmp_path / "training_log.csv")] == ["1"]


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(curves_module, "is_main_process", lambda: False)
    trainer, handler = make_trainer(tmp_path)
    trainer.run([0, 1], max_epochs=2)
    assert not list(tmp_path.iterdir()) and len(handler.rows) == 2
    assert TrainingCurves.rank_zero_only  # left out of the other ranks' handlers (for_this_rank)


def test_training_writes_its_curves(trained_tiny):
    """The shared tiny run (configs/train.json, 2 epochs): the handler is in the config's train handlers."""
    rows = rows_of(trained_tiny.output / "training_log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["train_loss"]) > 0 and 0 <= float(r["val_accuracy"]) <= 1 and float(r["lr"]) > 0 for r in rows)
    assert Image.open(trained_tiny.output / "training_curves.png").format == "PNG"
