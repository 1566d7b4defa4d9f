"""Inpainting pretraining (context encoders, GMML): reconstruct the masked pixels with the bundle's encoder-decoder.

``Inpainting`` trains ``MultiTaskNet(seg_channels=1)`` on batches masked by ``bundle.ssl.masking.BatchMasks``; its
``encoder.*`` and ``decoder.*`` weights are what fine-tuning loads (``configs/train.json --pretrained_ckpt``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..networks.multitask import encoder_channels
from ..values import Rule, choice, described, number
from .base import PretrainingMethod
from .losses import masked_reconstruction_loss, nt_xent_loss
from .masking import paste_from_batch

__all__ = ["Inpainting"]


class Inpainting(PretrainingMethod):
    """Masked reconstruction with the bundle's encoder-decoder; optional contrastive term between two masked views.

    Args:
        network: a ``MultiTaskNet`` built with ``seg_channels`` equal to the image channels (1); its encoder,
            decoder and segmentation head are trained, the classifier is not used.
        recon_loss: ``l1`` or ``l2``, over the masked pixels only.
        replace_prob: share of images whose masked pixels are pasted from another image of the batch (GMML).
        contrastive_weight: weight of the NT-Xent term between the two views (0 = reconstruction only; needs
            ``num_views=2`` in ``BatchMasks``).
        temperature: NT-Xent temperature.
        projection_dim: output size of the projection head of the contrastive term.
        image_key, target_key, mask_key: batch keys written by ``bundle.ssl.masking.BatchMasks``.

    The contrastive term compares projections of the pooled deepest encoder features of the two views (the
    SimCLR convention), whereas MONAI's 3D tutorial compares the flattened reconstructions: in a U-Net the skip
    connections carry the unmasked pixels straight to the output, so reconstructions of two views agree
    wherever both are unmasked, and that term would teach the encoder little.
    """

    def __init__(
        self,
        network: nn.Module,
        recon_loss: str = "l1",
        replace_prob: float = 0.0,
        contrastive_weight: float = 0.0,
        temperature: float = 0.1,
        projection_dim: int = 128,
        image_key: str = "image",
        target_key: str = "target",
        mask_key: str = "recon_mask",
    ) -> None:
        super().__init__()
        for part in ("encoder", "decoder", "segmentation_head", "skip_connect"):
            if not hasattr(network, part):
                raise TypeError(f"Inpainting needs a MultiTaskNet-like network (.{part}), got {type(network).__name__}")
        if recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2', got {recon_loss!r}")
        if not 0 <= replace_prob <= 1:
            raise ValueError(f"replace_prob must be in [0, 1], got {replace_prob}")
        self.encoder, self.decoder = network.encoder, network.decoder
        self.segmentation_head, self.skip_connect = network.segmentation_head, network.skip_connect
        self.recon_loss, self.replace_prob = recon_loss, float(replace_prob)
        self.contrastive_weight = float(contrastive_weight)
        self.image_key, self.target_key, self.mask_key = image_key, target_key, mask_key
        self.projector: nn.Module | None = None
        if self.contrastive_weight > 0:
            dim = encoder_channels(getattr(network, "backbone", "resnet18"))[-1]
            self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim))
            self.temperature = float(temperature)

    def reconstruct(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Reconstruction (B, C, H, W) of ``image`` and the encoder's feature maps."""
        features = self.encoder(image)
        return self.segmentation_head(self.decoder(features, self.skip_connect)), features

    def _view(self, batch: Mapping[str, torch.Tensor], suffix: str) -> tuple[torch.Tensor, torch.Tensor]:
        image, target, mask = batch[self.image_key + suffix], batch[self.target_key], batch[self.mask_key + suffix]
        if self.training and self.replace_prob > 0:
            image = paste_from_batch(image, target, mask, self.replace_prob)
        recon, features = self.reconstruct(image)
        if recon.shape[1] != target.shape[1]:
            raise ValueError(
                f"reconstruction has {recon.shape[1]} channels, images have {target.shape[1]}: build the network "
                f"with seg_channels={target.shape[1]}"
            )
        return masked_reconstruction_loss(recon, target, mask, self.recon_loss), features[-1].mean(dim=(2, 3))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        for key in (self.image_key, self.target_key, self.mask_key):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}: give SSLPrepareBatch the masks, bundle.ssl.masking.BatchMasks")
        loss, embedding = self._view(batch, "")
        out = {"embedding": embedding, "recon_loss": loss.detach()}
        if self.projector is not None:
            if self.image_key + "_2" not in batch:
                raise KeyError(
                    f"contrastive_weight > 0 needs a second masked view {self.image_key + '_2'!r}: "
                    "set num_views 2 in BatchMasks"
                )
            loss_2, embedding_2 = self._view(batch, "_2")
            z1, z2 = self.projector(embedding.float()).float(), self.projector(embedding_2.float()).float()
            contrast = nt_xent_loss(z1, z2, self.temperature)
            loss = 0.5 * (loss + loss_2) + self.contrastive_weight * contrast
            out["contrastive_loss"] = contrast.detach()
        out["loss"] = loss
        return out


# the settings the reconstruction method consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "recon_loss": described(choice(["l1", "l2"]), "reconstruction loss over the masked pixels"),
    "contrastive_weight": described(number(0), "weight of an NT-Xent term between two masked views (0: off)"),
}
