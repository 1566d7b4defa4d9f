"""The ViT backbones of the multi-task network: MONAI's ``ViT`` (2D, patch 16) and a UNETR-style lung decoder.

``vit_s16`` (ViT-S/16: 384 wide, 12 blocks, 6 heads, 21.7 M encoder parameters, the SPCXR backbone) and
``vit_b16`` (ViT-B/16: 768 wide, 12 blocks, 12 heads) plug into ``MultiTaskNet`` under the same ``backbone`` id
as the CNNs and keep its layout:

* ``encoder`` (``ViTEncoder``) is the transformer alone. It returns feature maps shallow to deep, like the CNN
  encoders: the input image itself (parameter-free, for the decoder's full-resolution skip), the tokens after
  blocks 3, 6 and 9 and the normalised tokens after the last block, each reshaped to the (H/16, W/16) patch grid
  (B, D, H/16, W/16); with ``pool="token"`` the normalised class token follows as a (B, D, 1, 1) map. The
  classifier pools the last map, so it reads the mean of the patch tokens or the class token.
* ``decoder`` (``UnetrDecoder``) holds every convolution: UNETR's image stem and its projections of the three
  intermediate depths up to strides 2, 4 and 8, and its up-sampling blocks. Freezing the encoder (linear probe)
  then freezes the transformer exactly, and contrastive pretraining on the encoder has no unused parameters.

Every LayerNorm has eps 1e-6, as in timm and DINOv2 (MONAI's default is 1e-5), so that published encoders
(``bundle.networks.published``) give their own features here.

MONAI's ``PatchEmbeddingBlock`` adds a position table of fixed size. Here the table is always the 14 x 14 grid of
224 px (SPCXR's size) and is resized bicubically to other grids (as DeiT / DINO do): one state_dict for every
image size, so weights pretrained at one size load at another, and any multiple of 16 works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets import ViT
from torch import nn

__all__ = [
    "VIT_BACKBONES",
    "PATCH_SIZE",
    "VIT_POOLS",
    "LAYER_NORM_EPS",
    "ViTEncoder",
    "UnetrDecoder",
    "PatchGrid",
    "build_vit_parts",
    "is_vit",
    "patch_size_of",
]

PATCH_SIZE = 16
NATIVE_SIZE = 224  # the position table's image size (14 x 14 patches)
DECODER_TAPS = (3, 6, 9)  # blocks (1-based) whose tokens feed the decoder, as in UNETR
VIT_POOLS = ("mean", "token")
# timm's and DINOv2's LayerNorm eps (MONAI's blocks use PyTorch's 1e-5): published encoders convert exactly
LAYER_NORM_EPS = 1e-6
VIT_BACKBONES: dict[str, dict[str, int]] = {
    "vit_s16": {"hidden_size": 384, "mlp_dim": 1536, "num_layers": 12, "num_heads": 6},
    "vit_b16": {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12},
}


def is_vit(backbone: str) -> bool:
    """True for the transformer backbones (``vit_s16``, ``vit_b16``)."""
    return str(backbone) in VIT_BACKBONES


class PatchGrid(nn.Module):
    """Patch tokens (B, N, D) as a (B, D, h, w) map on the patch grid; a module so that Grad-CAM can hook it."""

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


class ViTEncoder(nn.Module):
    """MONAI's 2D ViT with patch 16, returning feature maps shallow to deep (see the module docstring).

    Args:
        backbone: ``vit_s16`` or ``vit_b16``.
        in_channels: image channels (1 for radiographs).
        pool: ``mean`` (the classifier pools the patch tokens) or ``token`` (a class token is added and is the
            encoder's last feature map).
        dropout: dropout inside the transformer blocks.

    ``forward(x)``: ``x`` (B, C, H, W) with H and W multiples of 16 -> ``[x, g3, g6, g9, g12]`` (+ ``[token]``),
    ``g*`` (B, D, H/16, W/16), ``token`` (B, D, 1, 1).
    """

    # a TorchScript constant: the class-token branches are pruned when there is none (MONAI's TransformerBlock
    # does the same for its cross-attention)
    __constants__ = ["has_token"]

    def __init__(self, backbone: str = "vit_s16", in_channels: int = 1, pool: str = "mean", dropout: float = 0.0):
        super().__init__()
        if backbone not in VIT_BACKBONES:
            raise ValueError(f"unknown ViT backbone {backbone!r}; choose one of {sorted(VIT_BACKBONES)}")
        if pool not in VIT_POOLS:
            raise ValueError(f"vit_pool must be one of {VIT_POOLS}, got {pool!r}")
        shape = VIT_BACKBONES[backbone]
        self.pool = pool
        self.hidden_size = shape["hidden_size"]
        # classification=True only creates the class token; MultiTaskNet's classifier replaces MONAI's head
        self.vit = ViT(
            in_channels=in_channels,
            img_size=(NATIVE_SIZE, NATIVE_SIZE),
            patch_size=PATCH_SIZE,
            proj_type="conv",
            pos_embed_type="learnable",
            classification=pool == "token",
            dropout_rate=dropout,
            spatial_dims=2,
            qkv_bias=True,
            **shape,
        )
        if hasattr(self.vit, "classification_head"):
            del self.vit.classification_head
        for module in self.vit.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = LAYER_NORM_EPS
        for block in self.vit.blocks:
            # MONAI 1.6 builds this LayerNorm even without cross-attention and never uses it: unused parameters
            # would stop DistributedDataParallel (it waits for their gradients) and pad every checkpoint
            if not block.with_cross_attention:
                block.norm_cross_attn = nn.Identity()
        self.patch_size, self.native_grid = PATCH_SIZE, NATIVE_SIZE // PATCH_SIZE
        self.has_token = pool == "token"
        self.prefix = 1 if self.has_token else 0
        # decoder taps, and with a class token the input of the last block: the class token's last block reads the
        # patch tokens there (the last block's own patch outputs never reach it), so Grad-CAM explains that grid
        taps = list(DECODER_TAPS) + ([shape["num_layers"] - 1] if pool == "token" else [])
        self.taps = taps
        self.decoder_taps = list(DECODER_TAPS)
        self.grids = nn.ModuleDict({str(t): PatchGrid() for t in taps})
        self.patch_grid = PatchGrid()

    def saliency_stages(self) -> list[str]:
        """Module names (in this encoder) of its patch-token maps, shallow to deep; the last is the one whose
        gradients carry the class (the final grid for ``mean``, the last block's input for ``token``)."""
        if self.pool == "token":
            return [f"grids.{t}" for t in self.taps]
        return [f"grids.{t}" for t in self.taps] + ["patch_grid"]

    def position_table(self, height: int, width: int) -> torch.Tensor:
        """(1, h * w, D) position embeddings for an (h, w) patch grid: the 14 x 14 table, resized when needed."""
        table = self.vit.patch_embedding.position_embeddings
        side = self.native_grid
        # no shortcut for the native grid: resizing to the same size returns the table exactly, and a branch on
        # the grid size would fix an exported graph (torch.export, ONNX) to the size it was exported at
        grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(height, width), mode="bicubic", align_corners=False)
        return grid.to(table.dtype).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = self.patch_size
        # sizes stay symbolic under torch.export (int() would fix them), so exported graphs keep dynamic sides
        height, width = x.shape[-2] // size, x.shape[-1] // size
        if height * size != x.shape[-2] or width * size != x.shape[-1]:
            raise ValueError(f"a ViT backbone needs image sides that are multiples of {size}, got {list(x.shape)}")
        embed = self.vit.patch_embedding
        tokens = embed.patch_embeddings(x).flatten(2).transpose(1, 2)
        tokens = embed.dropout(tokens + self.position_table(height, width).to(tokens.dtype))
        if self.has_token:
            tokens = torch.cat([self.vit.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], 1)
        features = [x]
        for depth, block in enumerate(self.vit.blocks, start=1):
            tokens = block(tokens)
            for tap, grid in self.grids.items():
                if int(tap) == depth:
                    # the map goes back into the sequence, so that it lies on the path of every later output
                    patch_map = grid(tokens[:, self.prefix :], height, width)
                    tokens = torch.cat([tokens[:, : self.prefix], patch_map.flatten(2).transpose(1, 2)], 1)
                    if depth in self.decoder_taps:
                        features.append(patch_map)
        tokens = self.vit.norm(tokens)
        features.append(self.patch_grid(tokens[:, self.prefix :], height, width))
        if self.has_token:
            features.append(tokens[:, 0, :, None, None])
        return features


class UnetrDecoder(nn.Module):
    """UNETR's decoder in 2D (MONAI's UNETR blocks), fed by ``ViTEncoder``'s maps; returns (B, F, H, W) features.

    The image stem gives the stride-1 skip; the tokens of blocks 3, 6 and 9 are projected up to strides 2, 4 and 8
    (2, 1 and 0 extra up-convolutions); the last grid is up-sampled through them to full resolution.
    """

    def __init__(self, in_channels: int, hidden_size: int, feature_size: int = 16, norm_name: str = "instance"):
        super().__init__()
        fs = feature_size
        self.stem = UnetrBasicBlock(2, in_channels, fs, 3, 1, norm_name, res_block=True)
        self.proj = nn.ModuleList(
            [
                UnetrPrUpBlock(2, hidden_size, fs * 2**i, 3 - i, 3, 1, 2, norm_name, conv_block=True, res_block=True)
                for i in (1, 2, 3)
            ]
        )
        widths = [hidden_size, fs * 8, fs * 4, fs * 2, fs]
        self.up = nn.ModuleList(
            [UnetrUpBlock(2, widths[i], widths[i + 1], 3, 2, norm_name, res_block=True) for i in range(4)]
        )
        self.out_channels = fs

    def forward(self, features: list[torch.Tensor], skip_connect: int = 4) -> torch.Tensor:
        skips = [self.stem(features[0])]
        for i, proj in enumerate(self.proj):
            skips.append(proj(features[i + 1]))
        x = features[4]
        for i, up in enumerate(self.up):
            x = up(x, skips[3 - i])
        return x


def build_vit_parts(
    backbone: str, in_channels: int, seg_channels: int, pool: str = "mean"
) -> tuple[ViTEncoder, UnetrDecoder, nn.Module]:
    """(encoder, decoder, segmentation head) of a ViT ``MultiTaskNet``."""
    encoder = ViTEncoder(backbone, in_channels, pool)
    decoder = UnetrDecoder(in_channels, encoder.hidden_size)
    return encoder, decoder, UnetOutBlock(2, decoder.out_channels, seg_channels)


def patch_size_of(backbone: str) -> int:
    """The side in pixels of a backbone's input patches: 16 for the ViTs, 1 (pixels) for the CNNs.

    The group-masked pretraining config aligns its masks to it, so a ViT sees whole patches masked (SPCXR).
    """
    return PATCH_SIZE if is_vit(backbone) else 1
