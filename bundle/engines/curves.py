"""Training curves: each epoch's mean training loss, validation metrics and learning rate, as a CSV and a picture.

``<output_dir>/training_log.csv`` (one row per epoch) and ``<output_dir>/training_curves.png`` are rewritten
after every epoch, each atomically, so that a reader following a long run never sees half a file. A resumed run
reads the CSV back and continues it; the first epoch a run writes replaces that epoch and every later one of an
earlier run in the same folder (a run started over begins a new log).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events

from ..atomic import atomic_write
from ..distributed import is_main_process
from ..plots import plot_training_curves

__all__ = ["TrainingCurves", "read_log"]

logger = logging.getLogger(__name__)

LOG_FILE, PICTURE_FILE = "training_log.csv", "training_curves.png"
METRICS = ("val_auc", "val_accuracy", "val_dice")  # the validator's engine.state.metrics of configs/train.json
NAMES = {"val_auc": "AUC", "val_accuracy": "accuracy", "val_dice": "lung Dice"}


def _number(text: str) -> float:
    """A CSV cell as a float: NaN for an empty cell (an epoch without validation)."""
    return float(text) if text.strip() else math.nan


def read_log(path: str | os.PathLike, fields: Sequence[str]) -> list[dict[str, float]]:
    """The rows of a training log written by ``TrainingCurves``, sorted by epoch, values as floats (NaN where
    empty); ``[]`` when the file is missing, and with a warning when it cannot be read (a new log is begun)."""
    if not os.path.isfile(path):
        return []
    try:
        with open(path, newline="") as f:
            rows = [{k: _number(r.get(k) or "") for k in fields} for r in csv.DictReader(f)]
        rows = [r for r in rows if not math.isnan(r["epoch"])]
    except (OSError, ValueError, csv.Error) as e:
        logger.warning("cannot read the training log %s (%s): a new one is begun", path, e)
        return []
    return sorted(rows, key=lambda r: r["epoch"])


class TrainingCurves:
    """Ignite handler for a trainer: ``training_log.csv`` and ``training_curves.png`` in ``output_dir``.

    Per epoch: ``train_loss`` (the mean of the epoch's losses that ``bundle.engines.progress.EpochSummary``, listed
    before this handler, puts into the trainer's ``state.metrics["epoch_loss"]``: averaged once, not twice per iteration; under
    DDP rank 0's share of the batches),
    the ``metrics`` of the ``validator``'s ``state.metrics`` after its run in that epoch (empty cells for an epoch
    without validation) and ``lr`` (the optimizer's first group during the epoch). The picture marks the best
    epoch by ``key_metric`` (the first highest, as ``TrainingCheckpointer`` keeps the model). Only rank 0 writes.
    List it after the ``ValidationHandler``: each epoch's files then hold that epoch's validation.

    Args:
        output_dir: folder of the two files.
        validator: the evaluator run by the ``ValidationHandler`` (None: the loss and learning rate only).
        key_metric: the metric selecting the best epoch.
        metrics: the validator's metric names written and drawn; ``key_metric`` is added when missing.
        optimizer: whose learning rate is logged (default: the trainer's ``optimizer``).
    """

    rank_zero_only = True  # under DDP rank 0 alone writes (bundle.distributed.for_this_rank)

    def __init__(
        self,
        output_dir: str,
        validator: Engine | None = None,
        key_metric: str = "val_auc",
        metrics: Sequence[str] = METRICS,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.output_dir, self.validator, self.key_metric, self.optimizer = output_dir, validator, key_metric, optimizer
        self.metrics = list(metrics) + ([key_metric] if key_metric and key_metric not in metrics else [])
        self.fields = ["epoch", "train_loss", *self.metrics, "lr"]
        self.log_path = os.path.join(output_dir, LOG_FILE)
        self.picture_path = os.path.join(output_dir, PICTURE_FILE)
        self.rows: list[dict[str, float]] = []
        self._lr, self._dirty = math.nan, False
        self._epoch = -1  # the epoch of this run's latest row

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self._load)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)
        trainer.add_event_handler(Events.COMPLETED, self._write_if_changed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validated, trainer)

    def _load(self, trainer: Engine) -> None:
        self.rows, self._epoch = read_log(self.log_path, self.fields), -1
        if self.optimizer is None:
            self.optimizer = getattr(trainer, "optimizer", None)

    def _start_epoch(self, trainer: Engine) -> None:
        groups = getattr(self.optimizer, "param_groups", None)
        self._lr = float(groups[0]["lr"]) if groups else math.nan

    def _row(self, epoch: int) -> dict[str, float]:
        """This run's row of ``epoch``; made on first use, replacing the rows of an earlier run from that epoch on."""
        if self._epoch != epoch:
            self._epoch = epoch
            self.rows = [r for r in self.rows if int(r["epoch"]) < epoch]
            self.rows.append({"epoch": float(epoch), "train_loss": math.nan, **dict.fromkeys(self.metrics, math.nan)})
            self.rows[-1]["lr"] = self._lr
        self._dirty = True
        return self.rows[-1]

    def _validated(self, validator: Engine, trainer: Engine) -> None:
        row = self._row(trainer.state.epoch)
        for name in self.metrics:
            value = validator.state.metrics.get(name)
            row[name] = math.nan if value is None else float(torch.as_tensor(value, dtype=torch.float64).mean())

    def _end_epoch(self, trainer: Engine) -> None:
        self._row(trainer.state.epoch)["train_loss"] = float(trainer.state.metrics.get("epoch_loss", math.nan))
        self._write_if_changed(trainer)

    def _write_if_changed(self, trainer: Engine) -> None:
        if not self._dirty:
            return
        self._dirty = False
        if not is_main_process():
            return
        with atomic_write(self.log_path, "w", what="the training log", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _cell(k, row.get(k, math.nan)) for k in self.fields})
        names = [(m, NAMES.get(m, m)) for m in self.metrics]
        plot_training_curves(self.rows, self.picture_path, key_metric=self.key_metric, metrics=names)


def _cell(field: str, value: float) -> str:
    """A CSV cell: the epoch as an integer, numbers to 6 significant digits, empty for NaN."""
    if math.isnan(value):
        return ""
    return str(int(value)) if field == "epoch" else f"{value:.6g}"
