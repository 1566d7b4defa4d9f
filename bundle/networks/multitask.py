"""The multi-task network: one encoder, a classification head on its deepest features and a lung decoder.

Built on MONAI's FlexibleUNet backbones (resnet10...200, efficientnet-b0...b8) or on MONAI's ViT with a UNETR
decoder (vit_s16, vit_b16: ``bundle.networks.vit``), 1-channel input, no torchvision.
Parameter names are stable across the family (``encoder.*``, ``decoder.*``, ``segmentation_head.*``,
``classifier.*``), so pretraining heads, fine-tuning and the tensor-out views all share one state_dict layout.

``lungs_only`` changes only the class path, never the parameters: the lungs are segmented from the full image,
and the classifier sees the image with everything outside the (detached, thresholded, slightly dilated)
predicted lung mask set to zero, so markers, borders and devices outside the lungs cannot move the class.

``class_maps`` adds, in training only, the class activation maps of the deepest stage (``"class_map"``), which the
lung-guided loss (``bundle.losses``) reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from ..values import Rule, as_bool, boolean, choice, described, is_int
from .export import exportable
from .vit import VIT_BACKBONES, VIT_POOLS, build_vit_parts, is_vit

__all__ = [
    "MultiTaskNet",
    "MultiTaskClassifier",
    "MultiTaskSegmenter",
    "backbones",
    "encoder_channels",
    "build_encoder",
    "class_probabilities",
    "lung_mask",
]


def lung_mask(seg: torch.Tensor, dilation: int = 0) -> torch.Tensor:
    """(B, 1, H, W) 0/1 float lung mask from (B, C, H, W) segmentation logits, detached, grown by ``dilation`` px.

    Lung = lung probability > 0.5 (sigmoid for one channel, softmax channel 1 otherwise), the rule the lung masks
    written by evaluation and inference follow. The dilation is a max-pool with a (2 * dilation + 1) square window.
    """
    seg = seg.detach().float()
    prob = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, 1)[:, 1:2]
    mask = (prob > 0.5).float()
    if dilation > 0:
        mask = F.max_pool2d(mask, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return mask


def backbones() -> list[str]:
    """Every backbone name: MONAI's FlexibleUNet encoders and the ViTs."""
    return sorted(FLEXUNET_BACKBONE.register_dict) + sorted(VIT_BACKBONES)


def encoder_channels(backbone: str) -> tuple[int, ...]:
    """Channels of the encoder's feature maps, shallow to deep (the last feeds the classification head).

    For a ViT: the image (1 channel), then the transformer's width for each patch-token map.
    """
    if is_vit(backbone):
        return (1,) + (VIT_BACKBONES[backbone]["hidden_size"],) * 4
    if backbone not in FLEXUNET_BACKBONE.register_dict:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {backbones()}")
    return tuple(FLEXUNET_BACKBONE.register_dict[backbone]["feature_channel"])


class MultiTaskNet(nn.Module):
    """Encoder-decoder with a classification head; ``forward`` returns ``{"class": logits, "seg": logits}``.

    Args:
        num_classes: classes of the classification head.
        backbone: a FlexibleUNet backbone name (``resnet18`` trains at useful speed on a CPU) or ``vit_s16`` /
            ``vit_b16`` (MONAI's ViT, patch 16, with a UNETR decoder; image sides must be multiples of 16).
        in_channels: image channels (1 for radiographs).
        seg_channels: segmentation output channels (2: background, lung).
        decoder_channels: UNet decoder widths, deep to shallow (CNN backbones; the UNETR decoder has its own).
        dropout: dropout before the classification layer.
        lungs_only: classify ``image * lung_mask`` (the mask predicted from the full image by this network's own
            segmentation, detached) instead of the full image; costs a second encoder pass. The segmentation is
            always of the full image, and the parameters are the same either way. Training uses the predicted mask
            too, never a datalist's: ground-truth masks exist for some sources and classes only and differ in style
            by source (so they would tell the class), and evaluation and inference have only the predicted one.
            The mask is hard (0/1): a soft mask would pass a dimmed copy of what lies outside, still readable.
        lung_margin: with ``lungs_only``, the predicted mask is dilated by this fraction of the image width
            (0.02: 3 px at 128 px, 4 px at 224 px), so that lung borders and under-segmented opacities stay in.
        vit_pool: ViT backbones: the classifier reads the ``mean`` of the patch tokens or the class ``token``.
        class_maps: in training mode, ``forward`` also returns ``"class_map"`` (B, K, h, w), the class activation
            maps of the deepest feature map (``class_activation_maps``), for the lung-guided loss. Not with
            ``lungs_only`` (the class path then reads another image) nor with a class token (a 1 x 1 map).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        in_channels: int = 1,
        seg_channels: int = 2,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        dropout: float = 0.2,
        lungs_only: bool = False,
        lung_margin: float = 0.02,
        vit_pool: str = "mean",
        class_maps: bool = False,
    ) -> None:
        super().__init__()
        self.class_maps = as_bool(class_maps, "class_maps")
        if self.class_maps and (as_bool(lungs_only, "lungs_only") or (is_vit(backbone) and vit_pool == "token")):
            raise ValueError(
                "class_maps needs the classifier to pool the full image's deepest map: not with "
                "lungs_only or vit_pool 'token'"
            )
        if not 0 <= lung_margin < 0.5:
            raise ValueError(f"lung_margin must be in [0, 0.5), got {lung_margin!r}")
        if vit_pool not in VIT_POOLS:
            raise ValueError(f"vit_pool must be one of {VIT_POOLS}, got {vit_pool!r}")
        channels = encoder_channels(backbone)
        if is_vit(backbone):
            self.encoder, self.decoder, self.segmentation_head = build_vit_parts(
                backbone, in_channels, seg_channels, vit_pool
            )
            self.skip_connect = 4  # the UNETR decoder always joins all four skips
        else:
            unet = FlexibleUNet(
                in_channels=in_channels,
                out_channels=seg_channels,
                backbone=backbone,
                pretrained=False,  # initial weights come from a user's file (pretrained_ckpt), never a download
                decoder_channels=tuple(decoder_channels),
                spatial_dims=2,
            )
            self.skip_connect = unet.skip_connect
            self.encoder = exportable(unet.encoder)  # TorchScript-safe shortcuts; same parameters and outputs
            self.decoder = unet.decoder
            self.segmentation_head = unet.segmentation_head
        self.backbone = backbone
        self.num_classes = num_classes
        self.lungs_only = as_bool(lungs_only, "lungs_only")
        self.lung_margin = float(lung_margin)
        self.vit_pool = vit_pool
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(channels[-1], num_classes)
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder feature maps, shallow to deep."""
        return self.encoder(x)

    def classify(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class logits from the deepest feature map."""
        return self.classifier(features[-1])

    def class_activation_maps(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(B, K, h, w) class activation maps: the classifier's linear layer at every cell of the deepest map.

        The head is global average pooling, dropout and a linear layer, so for class k the gradient of its logit
        with respect to the (B, D, h, w) deepest map is the layer's weights w_k / (h w) at every cell, and Grad-CAM
        of that stage is relu(sum_d w_kd A_d) up to a positive factor: the class activation map (Zhou et al. 2016;
        Selvaraju et al. 2017). Computed directly, it costs one 1 x 1 convolution and no second backward pass.
        """
        return torch.einsum("bdhw,kd->bkhw", features[-1], self.classifier[-1].weight)

    def segment(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Segmentation logits from all feature maps."""
        return self.segmentation_head(self.decoder(features, self.skip_connect))

    def lungs_input(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """The classifier's input with ``lungs_only``: (B, C, H, W) ``x`` times the dilated mask of ``seg`` (B, 2, H, W)."""
        dilation = int(self.lung_margin * x.shape[-1] + 0.5)
        return x * lung_mask(seg, dilation).to(x.dtype)

    def class_logits(
        self, x: torch.Tensor, features: list[torch.Tensor], seg: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K) class logits of ``x`` (B, C, H, W) given its encoder ``features`` (``encode(x)``).

        By default the classifier reads ``features``. With ``lungs_only`` it reads a second encoding, of
        ``lungs_input(x, seg)``; ``seg`` (the full image's segmentation logits) is computed when not given. That
        second pass is the encoder's last call, so hooks on an encoder layer (Grad-CAM) see the class path.
        """
        if not self.lungs_only:
            return self.classify(features)
        if seg is None:
            seg = self.segment(features)
        return self.classify(self.encode(self.lungs_input(x, seg)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encode(x)
        seg = self.segment(features)
        out = {"class": self.class_logits(x, features, seg), "seg": seg}
        if self.class_maps and self.training:
            out["class_map"] = self.class_activation_maps(features)
        return out


class MultiTaskClassifier(MultiTaskNet):
    """The same network (same state_dict) returning class logits only: for saliency, export and MONAI's tools."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.class_logits(x, self.encode(x))


class MultiTaskSegmenter(MultiTaskNet):
    """The same network (same state_dict) returning lung segmentation logits only (of the full image, whatever
    ``lungs_only`` says)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.segment(self.encode(x))


def build_encoder(backbone: str = "resnet18", in_channels: int = 1, vit_pool: str = "mean") -> nn.Module:
    """A bare encoder with the same parameter names as ``MultiTaskNet.encoder`` (for pretraining heads)."""
    return MultiTaskNet(num_classes=1, backbone=backbone, in_channels=in_channels, vit_pool=vit_pool).encoder


def class_probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """(B, K) class probabilities from (B, K) logits: softmax over classes, or per-finding sigmoid (multi-label).

    The one place that decides how the classification head's logits are read, for training metrics,
    evaluation, inference and occlusion saliency alike.
    """
    logits = logits.float()
    return torch.sigmoid(logits) if as_bool(multi_label, "multi_label") else torch.softmax(logits, dim=1)


# FlexibleUNet's encoders halve the image five times and its decoder concatenates skip connections of matching size
ENCODER_STRIDE = 32


def image_size_rule(v: object) -> str | None:
    """An integer >= 32 and a multiple of 32 (``ENCODER_STRIDE``; a ViT's 16 px patches divide it too)."""
    if not is_int(v) or v < ENCODER_STRIDE:
        return f"must be an integer >= {ENCODER_STRIDE} and a multiple of {ENCODER_STRIDE}"
    if v % ENCODER_STRIDE:
        lo = v // ENCODER_STRIDE * ENCODER_STRIDE
        return (
            f"cannot be halved five times by the encoder and decoder; use a multiple of {ENCODER_STRIDE} "
            f"(e.g. {lo} or {lo + ENCODER_STRIDE})"
        )
    return None


# the settings the network consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "backbone": described(choice(backbones), "the encoder: a FlexibleUNet backbone (ResNet, EfficientNet) or a ViT"),
    "image_size": described(image_size_rule, "side of the square images the network sees"),
    "lungs_only": described(boolean, "classify the image with everything outside the predicted lungs set to zero"),
    "vit_pool": described(
        choice(VIT_POOLS),
        "what a ViT's classifier and contrastive heads read: the patch tokens' mean, or the class token",
    ),
}
