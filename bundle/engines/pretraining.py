"""Glue between pretraining methods and MONAI's SupervisedTrainer.

A method computes its loss from the batch's views in ``forward``; the trainer runs it with ``SSLPrepareBatch``
as ``prepare_batch``, ``SimpleInferer`` (it calls ``network(batch)``) and ``ssl_loss`` as ``loss_function``;
``MethodHooks`` calls the method's epoch and step hooks (momentum encoders, queues, schedules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..ssl.base import PretrainingMethod

__all__ = ["SSLPrepareBatch", "ssl_loss", "MethodHooks"]


class SSLPrepareBatch:
    """``prepare_batch`` for pretraining: every tensor of the batch to ``device``; returns ``(batch, None)``."""

    def __init__(self, keys: Sequence[str] | None = None) -> None:
        self.keys = keys

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[dict[str, Any], None]:
        keys = self.keys or [k for k, v in batchdata.items() if isinstance(v, torch.Tensor)]
        batch = {k: torch.as_tensor(batchdata[k]).to(device=device, non_blocking=non_blocking, **kwargs) for k in keys}
        return batch, None


def ssl_loss(pred: Mapping[str, torch.Tensor], target: Any = None) -> torch.Tensor:
    """``loss_function`` for SupervisedTrainer: the method computed its loss in ``forward``."""
    return pred["loss"]


class MethodHooks:
    """Call the method's ``on_epoch_start`` / ``on_step_end`` from the trainer's events."""

    def __init__(self, method: PretrainingMethod) -> None:
        self.method = method

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)

    def _epoch(self, engine: Engine) -> None:
        self.method.on_epoch_start(engine.state.epoch - 1, engine.state.max_epochs)

    def _step(self, engine: Engine) -> None:
        self.method.on_step_end(engine)
