"""Stop a diverging training run with one message.

``DivergenceGuard`` checks the loss after every iteration and the weights after every epoch (before validation
runs on them); a NaN or infinite value stops training via ``bundle.errors.fail`` with the epoch, the iteration,
the loss, the learning rate and what to try. The files of the last good epoch stay in ``ckpt_dir``: the
``TrainingCheckpointer`` never writes non-finite weights.

It also installs ``bundle.engines.user_errors.pass_user_errors``, so that its own message ends the run cleanly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import torch
from ignite.engine import Engine, Events
from torch import nn

from ..errors import fail
from ..values import as_bool
from .user_errors import UserErrorPassThrough

__all__ = ["DivergenceGuard", "loss_value"]


def loss_value(output: Any) -> torch.Tensor | float | None:
    """The loss in an engine's ``state.output``: a dict's ``"loss"`` (also in a list of decollated dicts), a
    tensor or a number; None when there is none."""
    if isinstance(output, Mapping):
        return output.get("loss")
    if isinstance(output, Sequence) and not isinstance(output, str) and output and isinstance(output[0], Mapping):
        return output[0].get("loss")
    if isinstance(output, (torch.Tensor, float, int)):
        return output
    return None


def _is_finite(value: torch.Tensor | float) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all()) if value.is_floating_point() else True
    return math.isfinite(float(value))


def _describe(value: torch.Tensor | float) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu()
        if value.numel() != 1:
            return f"non-finite in {int((~torch.isfinite(value)).sum())} of {value.numel()} elements"
        value = value.item()
    return f"{value}"


class DivergenceGuard:
    """Stop training at the first non-finite loss or weights, naming where and what to try.

    Args:
        optimizer: the trainer's optimizer: its learning rates go into the message. None: the engine's
            ``optimizer`` attribute, if any.
        amp: whether the trainer runs with mixed precision (a float16 overflow is then a likely cause);
            ``true``/``false`` strings are accepted.
        amp_dtype: the autocast dtype of ``amp``, ``float16`` or ``bfloat16`` (the message names the one in use:
            float16 overflows past 65504, bfloat16 keeps float32's range but only 8 bits of precision).
        network: the module whose parameters and buffers (e.g. BatchNorm running statistics, which can overflow
            while the loss is still finite) are checked after every epoch. None: the engine's ``network``
            attribute, else the optimizer's parameters.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        amp: bool | str = False,
        network: nn.Module | None = None,
        amp_dtype: str = "float16",
    ) -> None:
        self.optimizer, self.network = optimizer, network
        self.amp = as_bool(amp, "amp")
        self.amp_dtype = str(amp_dtype).strip().lower()

    def attach(self, engine: Engine) -> None:
        """Register the checks (list this handler first, so the weights are checked before validation runs on
        them) and the ``EXCEPTION_RAISED`` pass-through."""
        UserErrorPassThrough().attach(engine)
        if self.optimizer is None:
            self.optimizer = getattr(engine, "optimizer", None)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check_weights)

    def _tensors(self, engine: Engine) -> dict[str, torch.Tensor]:
        """The floating-point tensors checked after every epoch, by name."""
        # MONAI's trainers set ``network`` after attaching their handlers: looked up when needed
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if isinstance(network, nn.Module):
            named = {**dict(network.named_parameters()), **dict(network.named_buffers())}
        elif self.optimizer is not None:
            named = {
                f"param_groups.{i}.params.{j}": p
                for i, g in enumerate(self.optimizer.param_groups)
                for j, p in enumerate(g["params"])
            }
        else:
            named = {}
        return {k: v.detach() for k, v in named.items() if v.is_floating_point()}

    def _learning_rates(self) -> str:
        if self.optimizer is None:
            return "the learning rate"
        lrs = sorted({float(g["lr"]) for g in self.optimizer.param_groups})
        return f"the learning rate{'s' if len(lrs) > 1 else ''} (now {', '.join(f'{lr:g}' for lr in lrs)})"

    def _where(self, engine: Engine) -> str:
        length = engine.state.epoch_length
        iteration = (engine.state.iteration - 1) % length + 1 if length else engine.state.iteration
        return f"epoch {engine.state.epoch}, iteration {iteration}{f'/{length}' if length else ''}"

    def _stop(self, engine: Engine, what: str) -> NoReturn:
        cause = f"{self._learning_rates()} is likely too high"
        if self.amp and self.amp_dtype == "bfloat16":
            cause += ", or mixed precision lost too much precision in bfloat16 (try --amp false)"
        elif self.amp:
            cause += (
                ", or mixed precision overflowed float16 (try --amp false, or --amp_dtype bfloat16 on a GPU with it)"
            )
        done = engine.state.epoch - 1
        kept = (
            f"nothing non-finite is saved, the files of epoch {done} stay in ckpt_dir: rerun with a lower "
            "--learning_rate to resume from them"
            if done > 0
            else "no epoch had completed: rerun with a lower --learning_rate"
        )
        fail(f"training diverged at {self._where(engine)}: {what}. {cause[0].upper()}{cause[1:]}; {kept}")

    def check_loss(self, engine: Engine) -> None:
        """ITERATION_COMPLETED: stop when the loss is NaN or infinite."""
        loss = loss_value(engine.state.output)
        if loss is not None and not _is_finite(loss):
            self._stop(engine, f"the loss is {_describe(loss)}")

    def check_weights(self, engine: Engine) -> None:
        """EPOCH_COMPLETED: stop when the last steps left NaN or infinite weights (while the loss was finite)."""
        tensors = self._tensors(engine)
        if not tensors:
            return
        by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = defaultdict(list)
        for name, t in tensors.items():
            by_device[t.device].append((name, torch.isfinite(t).all()))
        bad = []
        for entries in by_device.values():  # one synchronisation per device
            finite = torch.stack([f for _, f in entries]).cpu().tolist()
            bad += [name for (name, _), ok in zip(entries, finite) if not ok]
        if bad:
            examples = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            self._stop(
                engine,
                f"{len(bad)} of the network's {len(tensors)} parameter and buffer tensors hold NaN or infinite "
                f"values ({examples}), while the loss was still finite",
            )
