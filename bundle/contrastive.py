"""Contrastive and self-distillation pretraining: SimCLR, MoCo v2, BYOL and SimSiam on the bundle's encoder.

Each method is a ``PretrainingMethod`` (see ``bundle.pretraining``): ``forward(batch)`` takes the two views
``batch["view1"]``, ``batch["view2"]`` (B, 1, H, W) and returns ``{"loss", "embedding"}``; momentum encoders,
queues and EMA targets are updated in ``on_step_end``, after the optimiser step. The encoder is
``build_encoder(backbone)``, so ``export_state()`` holds ``encoder.*`` keys that ``MultiTaskNet`` loads as-is.
MICLe is not a method of its own: it is any of these fed with multi-instance pairs (``bundle.views``).

References: SimCLR (Chen et al., ICML 2020), MoCo v2 (Chen et al., arXiv 2003.04297), BYOL (Grill et al.,
NeurIPS 2020), SimSiam (Chen & He, CVPR 2021), MICLe (Azizi et al., ICCV 2021).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .networks import build_encoder, encoder_channels
from .pretraining import PretrainingMethod

__all__ = [
    "METHODS",
    "build_method",
    "mlp",
    "nt_xent_loss",
    "ema_update",
    "ContrastiveMethod",
    "SimCLR",
    "MoCoV2",
    "BYOL",
    "SimSiam",
]

logger = logging.getLogger(__name__)


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    batch_norm: bool = True,
    last_bn: bool = False,
    last_bn_affine: bool = True,
) -> nn.Sequential:
    """Projection / prediction head: ``num_layers`` Linear layers, [BN] + ReLU between them, optional BN at the end."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
        last = i == num_layers - 1
        # a Linear followed by BN needs no bias (BN's shift replaces it)
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (batch_norm and not last) and not (last and last_bn)))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=last_bn_affine))
    return nn.Sequential(*layers)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent: for each of the 2B views, cross-entropy of its positive among the other 2B - 1 views.

    Same value as ``monai.losses.ContrastiveLoss`` (tests check it), written here because MONAI's version takes
    ``exp(sim / T)`` without the log-sum-exp shift, which overflows float32 for T below about 0.012 and float16
    much earlier, and it materialises a (2B, 2B, D) tensor for the cosine similarities.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (B, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # a view is never its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter.

    Buffers (BatchNorm running statistics) are not averaged: the target runs in training mode and keeps its own,
    as in the MoCo and BYOL reference code.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks differ in structure")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)


def _frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class ContrastiveMethod(PretrainingMethod):
    """Common parts: the encoder, global-average pooling of its deepest features, view unpacking, step counting.

    Args:
        backbone: FlexibleUNet backbone name (as in ``configs/common.json::backbone``).
        in_channels: image channels.
    """

    # (copy, original) module pairs: momentum / target networks that start as copies of the online ones
    twins: tuple[tuple[str, str], ...] = ()

    def __init__(self, backbone: str = "resnet18", in_channels: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = build_encoder(backbone, in_channels)
        self.feature_dim = encoder_channels(backbone)[-1]
        # total optimiser steps of the run, for schedules when no ignite engine is at hand (plain loops)
        self.total_steps: int | None = None
        self._steps_done = 0

    @staticmethod
    def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, C) global average of the encoder's deepest feature map."""
        return encoder(x)[-1].mean(dim=(2, 3))

    @staticmethod
    def views(batch: Mapping[str, torch.Tensor] | tuple | list) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch: ``batch["view1"], batch["view2"]`` (or a pair)."""
        if isinstance(batch, Mapping):
            try:
                return batch["view1"], batch["view2"]
            except KeyError:
                raise KeyError(f"a pretraining batch needs 'view1' and 'view2', got keys {sorted(batch)}") from None
        v1, v2 = batch
        return v1, v2

    def _progress(self, engine: Any) -> tuple[int, int | None]:
        """(steps done, total steps) from the ignite engine when there is one, else from the own counter."""
        state = getattr(engine, "state", None)
        if state is not None and getattr(state, "epoch_length", None) and getattr(state, "max_epochs", None):
            return int(state.iteration), int(state.epoch_length) * int(state.max_epochs)
        return self._steps_done, self.total_steps

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


class SimCLR(ContrastiveMethod):
    """SimCLR: NT-Xent between the projections of two views, other views of the batch as negatives.

    Both views go through the encoder as one batch, so BatchNorm sees all 2B views (SimCLR's global BN on
    one device). Projection head: Linear-BN-ReLU-Linear, hidden = encoder width, output ``proj_dim``.

    Args:
        backbone, in_channels: see ``ContrastiveMethod``.
        temperature: NT-Xent temperature (SimCLR on medical images: about 0.1).
        proj_dim: projection output size.
        hidden_dim: projection hidden size (default: the encoder's feature width).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        temperature: float = 0.1,
        proj_dim: int = 128,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, in_channels)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.projector = mlp(self.feature_dim, hidden_dim or self.feature_dim, proj_dim)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        z = self.projector(self.pooled(self.encoder, torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        return {"loss": nt_xent_loss(z1, z2, self.temperature), "embedding": z1.detach()}


class MoCoV2(ContrastiveMethod):
    """MoCo v2: query encoder, momentum key encoder and a FIFO queue of past keys as negatives.

    ``forward`` encodes ``view1`` as queries and ``view2`` as keys (without gradient) and scores each query
    against its key and the queue; the current keys join the queue only in ``on_step_end``, after the loss, so
    the queue never holds the current positives. The key encoder is then moved towards the query encoder.
    Projection head: Linear-ReLU-Linear (no BN), as in MoCo v2. On one device BatchNorm is not shuffled:
    with a single process there is no per-GPU sub-batch for "shuffling BN" to decorrelate.

    Args:
        backbone, in_channels: see ``ContrastiveMethod``.
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
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum: float = 0.99,
        proj_dim: int = 128,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, in_channels)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.temperature, self.momentum = temperature, momentum
        self.projector = mlp(self.feature_dim, hidden_dim or self.feature_dim, proj_dim, batch_norm=False)
        self.momentum_encoder = _frozen_copy(self.encoder)
        self.momentum_projector = _frozen_copy(self.projector)
        # buffers: saved with the method, so a resumed run continues with the same negatives
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: torch.Tensor | None = None

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised keys from the momentum encoder."""
        return F.normalize(self.momentum_projector(self.pooled(self.momentum_encoder, x)).float(), dim=1)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        q = F.normalize(self.projector(self.pooled(self.encoder, v1)).float(), dim=1)
        k = self.keys(v2)
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.T.clone()  # clone: the queue changes in place after this step
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        if self.training:
            self._pending_keys = k.detach()
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


class BYOL(ContrastiveMethod):
    """BYOL: an online network (encoder, projector, predictor) regresses an EMA target network's projections.

    Loss: symmetrised ``2 - 2 cos(p_online(view_a), z_target(view_b))``. The target has no trainable parameters
    and runs under ``no_grad``; after each step it becomes ``tau * target + (1 - tau) * online`` with
    ``tau = 1 - (1 - momentum) * (cos(pi k / K) + 1) / 2`` rising from ``momentum`` to ``momentum_end`` over the
    run's K steps. Heads: Linear-BN-ReLU-Linear, hidden 4096, output 256 (the paper's).

    Args:
        backbone, in_channels: see ``ContrastiveMethod``.
        momentum: base EMA rate (paper: 0.996; 0.99 for small data sets).
        momentum_end: final EMA rate of the cosine schedule (1.0 in the paper).
        proj_dim, hidden_dim: projector output / hidden size.
        pred_hidden_dim: predictor hidden size (default ``hidden_dim``).
    """

    twins = (("target_encoder", "encoder"), ("target_projector", "projector"))

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        momentum: float = 0.99,
        momentum_end: float = 1.0,
        proj_dim: int = 256,
        hidden_dim: int | None = 4096,
        pred_hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, in_channels)
        if not 0 <= momentum <= momentum_end <= 1:
            raise ValueError(f"need 0 <= momentum <= momentum_end <= 1, got {momentum}, {momentum_end}")
        hidden_dim = hidden_dim or 4096
        self.base_momentum, self.momentum_end = momentum, momentum_end
        self.current_momentum = momentum
        self.projector = mlp(self.feature_dim, hidden_dim, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden_dim or hidden_dim, proj_dim)
        self.target_encoder = _frozen_copy(self.encoder)
        self.target_projector = _frozen_copy(self.projector)

    @staticmethod
    def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean of ``2 - 2 cos(p, z)``, i.e. the squared distance of the L2-normalised vectors."""
        return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()

    def online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(self.pooled(self.encoder, x))
        return z, self.predictor(z)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.pooled(self.target_encoder, x))

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        z1, p1 = self.online(v1)
        _, p2 = self.online(v2)
        t1, t2 = self.target(v1), self.target(v2)
        loss = self.regression_loss(p1, t2) + self.regression_loss(p2, t1)
        return {"loss": loss, "embedding": z1.detach()}

    def momentum_at(self, step: int, total: int | None) -> float:
        """EMA rate after ``step`` of ``total`` steps (cosine from ``momentum`` to ``momentum_end``)."""
        if not total:
            return self.base_momentum
        progress = min(max(step / total, 0.0), 1.0)
        return self.momentum_end - (self.momentum_end - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def on_step_end(self, engine: Any = None) -> None:
        super().on_step_end(engine)
        self.current_momentum = self.momentum_at(*self._progress(engine))
        ema_update(self.target_encoder, self.encoder, self.current_momentum)
        ema_update(self.target_projector, self.projector, self.current_momentum)


class SimSiam(ContrastiveMethod):
    """SimSiam: a predictor maps one view's projection to the other's, whose branch is cut by a stop-gradient.

    Loss: ``-(cos(p1, stopgrad(z2)) + cos(p2, stopgrad(z1))) / 2``. No negatives and no momentum network; the
    stop-gradient is what prevents collapse. Heads as in the paper: projector 3 x (Linear-BN), ReLU between,
    output BN without affine; predictor Linear-BN-ReLU-Linear with a bottleneck (``pred_hidden_dim``).

    Args:
        backbone, in_channels: see ``ContrastiveMethod``.
        proj_dim, hidden_dim: projector output / hidden size (paper: 2048 both).
        pred_hidden_dim: predictor bottleneck (paper: 512).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        proj_dim: int = 2048,
        hidden_dim: int | None = 2048,
        pred_hidden_dim: int | None = 512,
    ) -> None:
        super().__init__(backbone, in_channels)
        hidden_dim = hidden_dim or 2048
        self.projector = mlp(self.feature_dim, hidden_dim, proj_dim, num_layers=3, last_bn=True, last_bn_affine=False)
        self.predictor = mlp(proj_dim, pred_hidden_dim or 512, proj_dim)

    @staticmethod
    def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``-cos(p, z)`` averaged over the batch; ``z`` is detached here, the stop-gradient of SimSiam."""
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        z1 = self.projector(self.pooled(self.encoder, v1))
        z2 = self.projector(self.pooled(self.encoder, v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (self.negative_cosine(p1, z2) + self.negative_cosine(p2, z1))
        return {"loss": loss, "embedding": z1.detach()}


METHODS: dict[str, type[ContrastiveMethod]] = {"simclr": SimCLR, "moco": MoCoV2, "byol": BYOL, "simsiam": SimSiam}


def build_method(name: str, **kwargs: Any) -> ContrastiveMethod:
    """Build a method by name (``simclr | moco | byol | simsiam``) from the config's shared ids.

    Arguments a method does not take (e.g. ``queue_size`` for SimCLR) and ``None`` values (use the method's
    default) are dropped, so one config switches methods with the single ``ssl_method`` id.
    """
    key = str(name).lower()
    if key not in METHODS:
        raise ValueError(f"unknown ssl_method {name!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[key]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    used = {k: v for k, v in kwargs.items() if k in accepted and v is not None}
    ignored = sorted(k for k, v in kwargs.items() if k not in accepted and v is not None)
    method = cls(**used)
    logger.info(
        "ssl_method %s: %s (not used by this method: %s)",
        key,
        ", ".join(f"{k}={v}" for k, v in sorted(used.items())),
        ", ".join(ignored) or "none",
    )
    return method
