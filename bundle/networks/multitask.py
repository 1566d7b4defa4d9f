"""The multi-task network: one encoder, a classification head on its deepest features and a lung decoder.

Built on MONAI's FlexibleUNet backbones (resnet10...200, efficientnet-b0...b8), 1-channel input, no torchvision.
Parameter names are stable across the family (``encoder.*``, ``decoder.*``, ``segmentation_head.*``,
``classifier.*``), so pretraining heads, fine-tuning and the tensor-out views all share one state_dict layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from ..settings import as_bool
from .export import exportable

__all__ = [
    "MultiTaskNet",
    "MultiTaskClassifier",
    "MultiTaskSegmenter",
    "encoder_channels",
    "build_encoder",
    "class_probabilities",
]


def encoder_channels(backbone: str) -> tuple[int, ...]:
    """Channels of the encoder's feature maps, shallow to deep (the last feeds the classification head)."""
    if backbone not in FLEXUNET_BACKBONE.register_dict:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(FLEXUNET_BACKBONE.register_dict)}")
    return tuple(FLEXUNET_BACKBONE.register_dict[backbone]["feature_channel"])


class MultiTaskNet(nn.Module):
    """Encoder-decoder with a classification head; ``forward`` returns ``{"class": logits, "seg": logits}``.

    Args:
        num_classes: classes of the classification head.
        backbone: a FlexibleUNet backbone name; ``resnet18`` trains at useful speed on a CPU.
        in_channels: image channels (1 for radiographs).
        seg_channels: segmentation output channels (2: background, lung).
        decoder_channels: UNet decoder widths, deep to shallow.
        dropout: dropout before the classification layer.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        in_channels: int = 1,
        seg_channels: int = 2,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        channels = encoder_channels(backbone)
        unet = FlexibleUNet(
            in_channels=in_channels,
            out_channels=seg_channels,
            backbone=backbone,
            pretrained=False,  # initial weights come from a user's file (pretrained_ckpt), never a download
            decoder_channels=tuple(decoder_channels),
            spatial_dims=2,
        )
        self.backbone = backbone
        self.num_classes = num_classes
        self.skip_connect = unet.skip_connect
        self.encoder = exportable(unet.encoder)  # TorchScript-safe shortcuts; same parameters and outputs
        self.decoder = unet.decoder
        self.segmentation_head = unet.segmentation_head
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(channels[-1], num_classes)
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder feature maps, shallow to deep."""
        return self.encoder(x)

    def classify(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class logits from the deepest feature map."""
        return self.classifier(features[-1])

    def segment(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Segmentation logits from all feature maps."""
        return self.segmentation_head(self.decoder(features, self.skip_connect))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encode(x)
        return {"class": self.classify(features), "seg": self.segment(features)}


class MultiTaskClassifier(MultiTaskNet):
    """The same network (same state_dict) returning class logits only: for saliency, export and MONAI's tools."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.classify(self.encode(x))


class MultiTaskSegmenter(MultiTaskNet):
    """The same network (same state_dict) returning lung segmentation logits only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.segment(self.encode(x))


def build_encoder(backbone: str = "resnet18", in_channels: int = 1) -> nn.Module:
    """A bare encoder with the same parameter names as ``MultiTaskNet.encoder`` (for pretraining heads)."""
    return MultiTaskNet(num_classes=1, backbone=backbone, in_channels=in_channels).encoder


def class_probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """(B, K) class probabilities from (B, K) logits: softmax over classes, or per-finding sigmoid (multi-label).

    The one place that decides how the classification head's logits are read, for training metrics,
    evaluation, inference and occlusion saliency alike.
    """
    logits = logits.float()
    return torch.sigmoid(logits) if as_bool(multi_label, "multi_label") else torch.softmax(logits, dim=1)
