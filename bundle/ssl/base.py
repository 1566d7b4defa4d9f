"""What every self-supervised method shares: the method interface, pooled encoder features and export.

A method is an ``nn.Module`` whose ``forward(batch)`` returns ``{"loss", "embedding"}``; MONAI's SupervisedTrainer
runs it unchanged (AMP, optimiser, handlers, resume) with the pieces in ``bundle.engines.pretraining``.
``export_state`` holds the weights fine-tuning loads, named as in ``MultiTaskNet`` (``encoder.*`` and, for
reconstruction, ``decoder.*`` / ``segmentation_head.*``).

Base classes: ``PretrainingMethod`` (all), ``TwoViewMethod`` (contrastive and self-distillation methods on two
views) and ``PretextMethod`` (a classification pretext task on single images).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..networks.multitask import build_encoder, encoder_channels

__all__ = [
    "EXPORT_PREFIXES",
    "PretrainingMethod",
    "TwoViewMethod",
    "PretextMethod",
    "pooled_features",
    "trainable_parameters",
]

# Parameter groups of MultiTaskNet that pretraining may provide to fine-tuning.
EXPORT_PREFIXES = ("encoder.", "decoder.", "segmentation_head.")


def pooled_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C) global average of the encoder's deepest feature map for images ``x`` (B, 1, H, W).

    For a ViT that map is the last block's patch grid (the mean of the patch tokens) or, with ``vit_pool`` token,
    the (B, C, 1, 1) class token itself.
    """
    return encoder(x)[-1].mean(dim=(2, 3))


def trainable_parameters(method: nn.Module) -> list[nn.Parameter]:
    """Parameters that receive gradients, for the optimiser (momentum encoders and EMA targets are left out)."""
    return [p for p in method.parameters() if p.requires_grad]


class PretrainingMethod(nn.Module):
    """Base class of self-supervised methods on the bundle's encoder (attribute ``encoder``).

    Subclasses implement ``forward(batch) -> {"loss": scalar, "embedding": (B, D)}`` and may override the hooks.
    """

    encoder: nn.Module

    def on_step_end(self, engine: Any = None) -> None:
        """After each optimiser step (momentum encoders, queues)."""

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Before each epoch (schedules); ``epoch`` counts from 0."""

    def export_state(self) -> dict[str, torch.Tensor]:
        """The transferable weights, as a plain state_dict."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(EXPORT_PREFIXES)}


class TwoViewMethod(PretrainingMethod):
    """Common parts of SimCLR, MoCo, BYOL and SimSiam: the encoder, view unpacking, step counting, twins.

    ``forward(batch)`` takes the two views ``batch["view1"]``, ``batch["view2"]`` (B, 1, H, W). MICLe is not a
    method of its own: it is any of these fed with multi-instance pairs (``bundle.data.pairs``).

    Args:
        backbone: the configs' ``backbone`` id (a FlexibleUNet encoder or a ViT).
        in_channels: image channels.
        vit_pool: ViT backbones: the pooled feature is the ``mean`` of the patch tokens or the class ``token``.
    """

    # (copy, original) module pairs: momentum / target networks that start as copies of the online ones
    twins: tuple[tuple[str, str], ...] = ()

    def __init__(self, backbone: str = "resnet18", in_channels: int = 1, vit_pool: str = "mean") -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = build_encoder(backbone, in_channels, vit_pool)
        self.feature_dim = encoder_channels(backbone)[-1]
        self._steps_done = 0

    pooled = staticmethod(pooled_features)

    @staticmethod
    def views(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch: ``batch["view1"], batch["view2"]``, each (B, 1, H, W)."""
        try:
            return batch["view1"], batch["view2"]
        except KeyError:
            raise KeyError(f"a pretraining batch needs 'view1' and 'view2', got keys {sorted(batch)}") from None

    def progress(self, engine: Any) -> tuple[int, int | None]:
        """(steps done, total steps) from the ignite engine when there is one, else (own counter, None)."""
        state = getattr(engine, "state", None)
        if state is not None and getattr(state, "epoch_length", None) and getattr(state, "max_epochs", None):
            return int(state.iteration), int(state.epoch_length) * int(state.max_epochs)
        return self._steps_done, None

    def on_step_end(self, engine: Any = None) -> None:
        """Count the step; subclasses update their momentum networks / queues here."""
        self._steps_done += 1

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``; a momentum / target network the state lacks becomes a copy again.

        Starting weights (``pretrained_ckpt``: ``encoder.*`` only) must reach the key encoder or EMA target too,
        or MoCo / BYOL would start against a random network; a resume state holds both and is loaded as is.
        """
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        keys = list(state_dict)
        for twin, original in self.twins:
            if any(k.startswith(original + ".") for k in keys) and not any(k.startswith(twin + ".") for k in keys):
                getattr(self, twin).load_state_dict(getattr(self, original).state_dict())
        return result


class PretextMethod(PretrainingMethod):
    """Common parts of the pretext tasks: an encoder and a classification loss on its pooled deepest features.

    Args:
        encoder: the bundle's encoder (``bundle.networks.build_encoder``).
        image_key: batch key of the (B, 1, H, W) images.
    """

    def __init__(self, encoder: nn.Module, image_key: str = "image") -> None:
        super().__init__()
        self.encoder = encoder
        self.image_key = image_key

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) global-average-pooled deepest encoder features."""
        return pooled_features(self.encoder, images)

    @staticmethod
    def result(logits: torch.Tensor, labels: torch.Tensor, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss", "embedding", "accuracy"}`` of pretext logits (B, N) against the task's labels (B,)."""
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "embedding": embedding, "accuracy": accuracy}
