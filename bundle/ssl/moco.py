"""MoCo v2 (Chen et al., arXiv 2003.04297): momentum key encoder and a queue of past keys as negatives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from ..distributed import broadcast_, gather_no_grad, is_distributed, rank
from ..values import Rule, described, integer, is_int
from .base import TwoViewMethod
from .heads import mlp
from .momentum import ema_update, frozen_copy

__all__ = ["MoCoV2"]


class MoCoV2(TwoViewMethod):
    """MoCo v2: query encoder, momentum key encoder and a FIFO queue of past keys as negatives.

    ``forward`` encodes ``view1`` as queries and ``view2`` as keys (without gradient) and scores each query
    against its key and the queue; the current keys join the queue only in ``on_step_end``, after the loss, so
    the queue never holds the current positives. The key encoder is then moved towards the query encoder.
    Projection head: Linear-ReLU-Linear (no BN), as in MoCo v2. Under DDP the keys are computed with MoCo's
    shuffling BN (``shuffled_keys``) and the keys of every rank join the queue, so all ranks keep one queue; on
    one process BatchNorm is not shuffled: there is no per-GPU sub-batch for shuffling to decorrelate.

    Args:
        backbone, in_channels, vit_pool: see ``TwoViewMethod``.
        temperature: InfoNCE temperature (MoCo v2: 0.2).
        queue_size: number of negative keys kept; keep it well below the number of training images, or the
            queue holds keys of the same images from earlier epochs.
        momentum: key encoder momentum (0.999 for ImageNet-size data; 0.99 suits thousands of images).
        proj_dim, hidden_dim: projection output / hidden size (hidden default: encoder width).
    """

    twins = (("momentum_encoder", "encoder"), ("momentum_projector", "projector"))

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        vit_pool: str = "mean",
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum: float = 0.99,
        proj_dim: int = 128,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, in_channels, vit_pool)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.temperature, self.momentum = temperature, momentum
        self.projector = mlp(self.feature_dim, hidden_dim or self.feature_dim, proj_dim, batch_norm=False)
        self.momentum_encoder = frozen_copy(self.encoder)
        self.momentum_projector = frozen_copy(self.projector)
        # buffers: saved with the method, so a resumed run continues with the same negatives
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: torch.Tensor | None = None

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised keys from the momentum encoder."""
        return F.normalize(self.momentum_projector(self.pooled(self.momentum_encoder, x)).float(), dim=1)

    @torch.no_grad()
    def shuffled_keys(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys of this rank's ``x`` (B, 1, H, W) computed on a random shard of the global batch; and all keys.

        MoCo's shuffling BN: each rank's key encoder sees images of other ranks, so batch-norm statistics
        cannot tell a query's own key apart. Returns (B, D) keys of this rank and (W * B, D) of every rank.
        """
        n = x.shape[0]
        everyone = gather_no_grad(x)
        order = broadcast_(torch.randperm(len(everyone), device=x.device))  # one permutation for all ranks
        mine = slice(rank() * n, (rank() + 1) * n)
        shuffled = gather_no_grad(self.keys(everyone[order[mine]]))  # row j holds the key of image order[j]
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled
        return keys[mine], keys

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        q = F.normalize(self.projector(self.pooled(self.encoder, v1)).float(), dim=1)
        if is_distributed() and self.training:
            k, all_keys = self.shuffled_keys(v2)
        else:
            k = all_keys = self.keys(v2)
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.T.clone()  # clone: the queue changes in place after this step
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        if self.training:
            self._pending_keys = all_keys.detach()  # every rank's keys: the ranks keep one queue
        return {"loss": loss, "embedding": q.detach()}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` over the oldest entries of the queue (ring buffer) and advance the pointer."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        ptr = int(self.queue_ptr)
        idx = (ptr + torch.arange(len(keys), device=self.queue.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + len(keys)) % size)

    @torch.no_grad()
    def on_step_end(self, engine: Any = None) -> None:
        super().on_step_end(engine)
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)
        if self._pending_keys is not None:
            self.enqueue(self._pending_keys)
            self._pending_keys = None


RULES: dict[str, Rule] = {
    "queue_size": described(integer(1), "MoCo: past keys kept as negatives (at least one batch)")
}  # the setting MoCo alone consumes (bundle.settings)


def queue_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """MoCo's queue holds at least one batch of keys."""
    if workflow != "pretrain_contrastive" or not (is_int(s.get("queue_size")) and is_int(s.get("batch_size"))):
        return []
    if str(s.get("ssl_method", "")).lower() == "moco" and s["queue_size"] < s["batch_size"]:
        return [
            f"queue_size: {s['queue_size']} is smaller than batch_size {s['batch_size']}; MoCo's queue holds "
            "at least one batch of keys"
        ]
    return []


CHECKS = (queue_check,)
