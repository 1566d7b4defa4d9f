"""What a run prints while it trains: a bar on a terminal, one line per epoch, a line a minute in long epochs.

A bar redrawn in place is pleasant in a terminal but fills a log file (CI, ``nohup``, a cluster job) with
carriage returns, and a line per iteration buries the epochs' results; so the configs draw the bar only when stderr
is a terminal (``show_progress``) and otherwise log a line within an epoch only when a minute has passed since the
last one (``IterationProgress``). ``EpochSummary`` writes each epoch's one line: the mean training loss, the
validation metrics, whether the model file was updated, the learning rate and the time taken.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from ..values import Rule, as_bool, boolean, described

__all__ = ["is_terminal", "IterationProgress", "EpochSummary", "format_metric"]

logger = logging.getLogger(__name__)


def is_terminal() -> bool:
    """Whether progress bars can be drawn: stderr (where tqdm writes) is an interactive terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _loss(output: Any) -> dict[str, float]:
    loss = output.get("loss") if isinstance(output, dict) else None
    if isinstance(loss, torch.Tensor):  # detached: a scalar of a graph makes PyTorch warn on every iteration
        loss = loss.detach()
    return {} if loss is None else {"loss": float(loss)}


def _as_values(transform: Callable[[Any], Any]) -> Callable[[Any], dict[str, float]]:
    """An output transform giving a number (the loss) or a dict of numbers, as one giving a dict."""

    def values(output: Any) -> dict[str, float]:
        value = transform(output)
        return dict(value) if isinstance(value, Mapping) else {"loss": float(value)}

    return values


class IterationProgress:
    """Ignite's ``ProgressBar`` (iterations of each epoch, with the loss) when ``bar``; otherwise a log line when
    ``log_seconds`` have passed since the last one (``epoch 2/30: iteration 1200/7000, loss 1.23, about 9 min left in
    this epoch``), so that a long epoch shows it is alive and a short one prints nothing.

    Args:
        bar: draw the bar (the configs pass ``show_progress``).
        log_seconds: seconds between log lines without a bar.
        output_transform: engine output -> the number or ``{name: number}`` shown (default: the ``loss`` entry).
    """

    rank_zero_only = True  # one bar, rank 0's, under DDP (bundle.distributed.for_this_rank)

    def __init__(
        self, bar: bool = True, log_seconds: float = 60.0, output_transform: Callable[[Any], dict] | None = None
    ) -> None:
        self.bar, self.log_seconds = as_bool(bar, "show_progress"), float(log_seconds)
        self.output_transform = _as_values(output_transform) if output_transform is not None else _loss
        self._epoch_start = self._last = 0.0

    def attach(self, engine: Engine) -> None:
        if self.bar:
            ProgressBar(persist=False).attach(engine, output_transform=self.output_transform)
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._log)

    def _start(self, engine: Engine) -> None:
        self._epoch_start = self._last = time.monotonic()

    def _log(self, engine: Engine) -> None:
        now = time.monotonic()
        if now - self._last < self.log_seconds:
            return
        self._last = now
        state = engine.state
        length = state.epoch_length or 0
        done = (state.iteration - 1) % length + 1 if length else state.iteration
        values = ", ".join(f"{k} {v:.4g}" for k, v in self.output_transform(state.output).items())
        line = f"epoch {state.epoch}/{state.max_epochs}: iteration {done}/{length or '?'}"
        line += f", {values}" if values else ""
        if length and done < length:
            left = (now - self._epoch_start) / done * (length - done)
            line += f", about {_duration(left)} left in this epoch"
        logger.info(line)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def format_metric(value: Any) -> str:
    """A metric for a log line: 4 significant digits, ``nan`` for an undefined one."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.4g}"


class EpochSummary:
    """One log line per training epoch, written after the epoch's validation and checkpoint:
    ``epoch 3/12: train_loss 1.482 | val_auc 0.8208 (best: model.pt saved), val_accuracy 0.3913, val_dice 0.768 |
    lr 0.00093 | 16 s``.

    The epoch's mean loss (over its iterations) is also put into the trainer's ``engine.state.metrics`` as
    ``epoch_loss``, for the handlers attached after this one: the training curves, and TensorBoard's epoch scalars
    (a tag of its own: ``train_loss`` there holds the iterations' losses).

    Args:
        validator: the evaluator run at the end of epochs (its ``state.metrics``), or None.
        optimizer: for the learning rate used during the epoch, or None.
        key_metric: the validation metric that selects the model file; marked ``best`` when the checkpointer
            (``bundle.checkpoints.TrainingCheckpointer``, listed before this handler) saved the model this epoch.
        loss_key: the entry of the trainer's output holding the loss.
    """

    rank_zero_only = True  # one line, rank 0's, under DDP (bundle.distributed.for_this_rank)

    def __init__(
        self,
        validator: Engine | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        key_metric: str = "",
        loss_key: str = "loss",
    ) -> None:
        self.validator, self.optimizer, self.key_metric, self.loss_key = validator, optimizer, key_metric, loss_key
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        # a device tensor: adding on the device needs no synchronisation per iteration, reading it once does
        self._sum: torch.Tensor | float = 0.0
        self._count, self._start = 0, time.monotonic()
        self._lr = None if self.optimizer is None else float(self.optimizer.param_groups[0]["lr"])

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        loss = out.get(self.loss_key) if isinstance(out, Mapping) else None
        if loss is not None:
            self._sum = self._sum + (loss.detach().float() if isinstance(loss, torch.Tensor) else float(loss))
            self._count += 1

    def _validation(self, trainer: Engine) -> str:
        """The validation metrics of this epoch, ``""`` when it had no validation."""
        state, epoch = getattr(self.validator, "state", None), trainer.state.epoch
        if state is None or state.epoch != epoch or not state.metrics:
            return ""
        names = [k for k, v in state.metrics.items() if torch.as_tensor(v).numel() == 1]
        parts = [f"{k} {format_metric(state.metrics[k])}" for k in names]
        saved = getattr(trainer.state, "model_saved", None)  # (epoch, path), set by the checkpointer
        if self.key_metric in names and saved is not None and saved[0] == epoch:
            parts[names.index(self.key_metric)] += f" (best: {os.path.basename(saved[1])} saved)"
        return ", ".join(parts)

    def _report(self, engine: Engine) -> None:
        state = engine.state
        parts = []
        if self._count:
            mean = float(self._sum) / self._count
            state.metrics[f"epoch_{self.loss_key}"] = mean
            parts.append(f"train_{self.loss_key} {format_metric(mean)}")
        validation = self._validation(engine)
        parts += [validation] if validation else []
        parts += [] if self._lr is None else [f"lr {self._lr:.3g}"]
        parts.append(_duration(time.monotonic() - self._start))
        logger.info("epoch %d/%d: %s", state.epoch, state.max_epochs, " | ".join(parts))


RULES: dict[str, Rule] = {
    "show_progress": described(boolean, "progress bars on a terminal instead of a log line a minute within epochs")
}  # the setting this module consumes (bundle.settings)
