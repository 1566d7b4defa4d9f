"""Losses of the self-supervised methods: NT-Xent, BYOL's regression, SimSiam's negative cosine, masked
reconstruction."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..distributed import gather, rank

__all__ = ["nt_xent_loss", "regression_loss", "negative_cosine", "masked_reconstruction_loss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent: for each of the 2B views, cross-entropy of its positive among the other 2B - 1 views.

    ``z1``, ``z2`` (B, D) are the projections of the two views. Under DDP the candidates are the views of the
    whole global batch (``bundle.distributed.gather``, with gradients): each rank scores its own 2B views
    against all 2WB, so the mean over ranks equals the loss of one process holding the global batch, and so
    do the gradients after DDP's averaging. Every rank must hold the same B (``drop_last``).

    Same value as ``monai.losses.ContrastiveLoss`` (tests check it), written here because MONAI's version takes
    ``exp(sim / T)`` without the log-sum-exp shift, which overflows float32 for T below about 0.012 and float16
    much earlier, it materialises a (2B, 2B, D) tensor for the cosine similarities, and it knows one process only.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (B, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D): this rank's views
    g1, g2 = gather(anchors[:n]), gather(anchors[n:])  # (WB, D) each: every rank's views, in rank order
    candidates = torch.cat([g1, g2])  # (2WB, D): first views of all ranks, then second views
    total, offset = g1.shape[0], rank() * n if g1.shape[0] > n else 0
    logits = (anchors @ candidates.T) / temperature
    own = torch.arange(n, device=anchors.device) + offset  # this rank's first views among the candidates
    self_index = torch.cat([own, own + total])
    logits[torch.arange(2 * n, device=anchors.device), self_index] = float("-inf")  # a view is never its negative
    targets = torch.cat([own + total, own])  # the other view of the same image
    return F.cross_entropy(logits, targets)


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss: mean of ``2 - 2 cos(p, z)`` over the batch, i.e. the squared distance of the L2-normalised
    (B, D) vectors."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's loss: ``-cos(p, z)`` of (B, D) vectors averaged over the batch; ``z`` is detached here, the
    stop-gradient of SimSiam."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def masked_reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """Mean L1 (or L2) error over the masked pixels only (``mask`` 1 = counted), over the whole batch."""
    diff = pred.float() - target.float()
    err = diff.abs() if kind == "l1" else diff.square()
    weight = mask.float().expand_as(err)
    return (err * weight).sum() / weight.sum().clamp(min=1.0)
