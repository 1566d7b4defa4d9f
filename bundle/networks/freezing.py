"""A frozen encoder for the linear probe: the pretrained features stay as they are, the heads train.

``configs/train.json`` with ``freeze_encoder: true`` builds its optimiser from ``trainable_parameters``: the
encoder's parameters get ``requires_grad=False`` and are left out of the optimiser, and the encoder stays in eval
mode (batch-norm running statistics fixed, dropout off) although ``SupervisedTrainer`` calls ``network.train()``
at every iteration. The classification head and the lung decoder train as usual, so the probe also reports Dice.
"""

from __future__ import annotations

import types

from torch import nn

from ..errors import fail
from ..values import Rule, as_bool, boolean, described

__all__ = ["freeze_encoder", "trainable_parameters"]


def _train_stays_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``module.train(mode)`` that keeps the module (and its children) in eval mode."""
    return nn.Module.train(module, False)


def freeze_encoder(network: nn.Module) -> nn.Module:
    """Freeze ``network.encoder`` in place; returns ``network``.

    Its parameters stop requiring gradients and it stays in eval mode whatever ``train()`` calls follow: a bound
    ``train`` on the instance replaces ``nn.Module.train``, which the parent's ``train()`` calls on each child.
    A network already wrapped for DDP is refused: DDP's reducer registers the parameters that require gradients
    when it is built, and would wait forever for the encoder's.
    """
    if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        fail("freeze_encoder: true is for single-process training (configs/train.json without multi_gpu_train.json)")
    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"freeze_encoder: {type(network).__name__} has no encoder module to freeze")
    encoder.requires_grad_(False)
    encoder.train = types.MethodType(_train_stays_eval, encoder)
    encoder.eval()
    return network


def trainable_parameters(network: nn.Module, frozen_encoder: bool | str = False) -> list[nn.Parameter]:
    """The parameters the optimiser trains: all of ``network``'s, or all but the encoder's when ``frozen_encoder``.

    With ``frozen_encoder`` the encoder is frozen first (``freeze_encoder``), so building the optimiser is what
    applies the setting, before any training step, whichever config id is read first.
    """
    if as_bool(frozen_encoder, "freeze_encoder"):
        freeze_encoder(network)
    return [p for p in network.parameters() if p.requires_grad]


RULES: dict[str, Rule] = {
    "freeze_encoder": described(boolean, "linear probe: the encoder's weights and batch-norm statistics stay as loaded")
}  # the setting this module consumes (bundle.settings)
