"""Monitoring of pretraining: loss, learning rate, embedding spread (collapse warning) and a kNN probe."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.nn import functional as F

from ..atomic import quiet_writer_threads, write_failed
from ..data.precision import to_float
from ..distributed import unwrap
from ..values import Rule, described, integer, number
from .base import PretrainingMethod, pooled_features

__all__ = ["METRICS", "PretrainMonitor", "knn_accuracy", "encode_pooled", "probe_entries", "probe_loaders"]

logger = logging.getLogger(__name__)

# a row's values -> their names in the trainer's engine.state.metrics (the loss as EpochSummary names it)
METRICS = {"loss": "epoch_loss", "embedding_std": "embedding_std", "knn_accuracy": "knn_accuracy"}


@torch.no_grad()
def encode_pooled(encoder: nn.Module, loader: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Global-average-pooled deepest encoder features (L2-normalised) and labels of a labelled loader."""
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    for batch in loader:
        # the probe reads the training caches, which may hold compact integer images: floats after the copy
        x = to_float(torch.as_tensor(batch["image"]).to(device))
        f = pooled_features(encoder, x)
        feats.append(F.normalize(f.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch["label"]).cpu())
    encoder.train(was_training)
    if not feats:  # an empty split: no features, and knn_accuracy answers NaN
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.1,
) -> float:
    """Weighted cosine kNN accuracy (the usual health check of self-supervised features, as in DINO/InstDisc).

    Labels are class indices (B,) with -1 for unlabelled images, or multi-label 0/1 vectors (B, C) with -1 for
    unknown: then each class is voted on separately (weighted share of positive neighbours > 0.5) and the
    accuracy is over the known (image, class) pairs. NaN when either side has no labelled image.
    """
    if train_labels.ndim == 2:
        keep_t, keep_v = (train_labels >= 0).all(1), (val_labels >= 0).any(1)
    else:
        keep_t, keep_v = train_labels >= 0, val_labels >= 0
    train_feats, train_labels = train_feats[keep_t], train_labels[keep_t]
    val_feats, val_labels = val_feats[keep_v], val_labels[keep_v]
    if len(train_labels) == 0 or len(val_labels) == 0:
        return float("nan")
    k = min(k, len(train_labels))
    sim = val_feats @ train_feats.T
    top, idx = sim.topk(k, dim=1)
    weights = (top / temperature).exp()
    if train_labels.ndim == 2:
        score = (weights[..., None] * train_labels[idx].float()).sum(1) / weights.sum(1, keepdim=True)
        known = val_labels >= 0
        return float(((score > 0.5).float() == val_labels.float())[known].float().mean())
    train_labels, val_labels = train_labels.long(), val_labels.long()
    votes = torch.zeros(len(val_labels), int(max(train_labels.max(), val_labels.max())) + 1)
    votes.scatter_add_(1, train_labels[idx], weights)
    return float((votes.argmax(1) == val_labels).float().mean())


class PretrainMonitor:
    """Per-epoch log of loss, learning rate and embedding spread; collapse warning; periodic kNN probe.

    Embedding spread is the mean per-dimension standard deviation of L2-normalised embeddings: about
    ``1/sqrt(D)`` for well-spread features and near 0 when every image maps to one point (collapse).

    Each epoch's values are also put into the trainer's ``engine.state.metrics`` (``METRICS``: ``epoch_loss``,
    ``embedding_std``, ``knn_accuracy`` in the epochs that probe), for the handlers listed after this one (MONAI's
    ``MLFlowHandler`` under ``--tracking mlflow`` logs them); an epoch without a value has no entry.

    Args:
        method: the pretraining method (its ``encoder`` is probed).
        optimizer: to log the learning rate.
        probe_loaders: ``(train_loader, val_loader)`` of labelled images for the kNN probe, or None.
        probe_interval: epochs between probes, and after the last epoch (0 = never).
        log_dir: TensorBoard folder (None = console only).
        collapse_ratio: warn when spread < ``collapse_ratio / sqrt(D)``.
    """

    rank_zero_only = True  # under DDP rank 0 alone probes and logs (bundle.distributed.for_this_rank)

    def __init__(
        self,
        method: PretrainingMethod,
        optimizer: torch.optim.Optimizer,
        probe_loaders: Sequence[Any] | None = None,
        probe_interval: int = 1,
        log_dir: str | None = None,
        collapse_ratio: float = 0.1,
    ) -> None:
        self.method, self.optimizer = unwrap(method), optimizer
        self.probe_loaders, self.probe_interval = probe_loaders, probe_interval
        self.log_dir, self.collapse_ratio = log_dir, collapse_ratio
        self.history: list[dict[str, float]] = []
        self._writer = None
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self._loss_sum, self._count, self._embeddings = 0.0, 0, []
        if engine is not None:  # the previous epoch's values must not pass for this epoch's
            for name in METRICS.values():
                engine.state.metrics.pop(name, None)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        loss = out["loss"]
        self._loss_sum += float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self._count += 1
        emb = out.get("pred", {}).get("embedding") if isinstance(out.get("pred"), Mapping) else None
        if emb is not None and len(self._embeddings) < 64:  # a few batches suffice for the spread estimate
            self._embeddings.append(F.normalize(emb.detach().float(), dim=1).cpu())

    def _report(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        row: dict[str, float] = {"epoch": epoch, "loss": self._loss_sum / max(self._count, 1)}
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if self._embeddings:
            emb = torch.cat(self._embeddings)
            row["embedding_std"] = float(emb.std(dim=0).mean()) if len(emb) > 1 else float("nan")
            floor = self.collapse_ratio / math.sqrt(emb.shape[1])
            if row["embedding_std"] < floor:
                logger.warning(
                    "epoch %d: embeddings are collapsing (std %.4f < %.4f): check the learning rate, augmentations and "
                    "batch size",
                    epoch,
                    row["embedding_std"],
                    floor,
                )
        last = epoch == engine.state.max_epochs  # the final weights are always probed
        if self.probe_loaders and self.probe_interval and (epoch % self.probe_interval == 0 or last):
            device = next(self.method.parameters()).device
            tr = encode_pooled(self.method.encoder, self.probe_loaders[0], device)
            va = encode_pooled(self.method.encoder, self.probe_loaders[1], device)
            row["knn_accuracy"] = knn_accuracy(*tr, *va)
        self.history.append(row)
        engine.state.metrics.update({METRICS[k]: v for k, v in row.items() if k in METRICS})
        logger.info(
            "epoch %d/%d: %s",
            epoch,
            engine.state.max_epochs,
            ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
        )
        self._tensorboard(row)

    def _tensorboard(self, row: dict[str, float]) -> None:
        if not self.log_dir:
            return
        try:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                quiet_writer_threads()  # the failed write is reported here, by _failed
                self._writer = SummaryWriter(self.log_dir)
            for k, v in row.items():
                if k != "epoch" and not np.isnan(v):
                    self._writer.add_scalar(f"pretrain/{k}", v, int(row["epoch"]))
            self._writer.flush()
        except OSError as e:
            self._failed(e)

    def _failed(self, error: OSError) -> NoReturn:
        """A TensorBoard write failed (full disk, no permission): stop with one message naming its event file."""
        writer = getattr(getattr(self._writer, "file_writer", None), "event_writer", None)
        path = getattr(writer, "_file_name", None) or os.path.join(self.log_dir, "events.out.tfevents.*")
        self._writer = None  # its thread has stopped on the error; closing it would raise the error again
        write_failed(path, error, "the TensorBoard log", "the epochs logged before are kept")

    def _close(self, engine: Engine) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as e:
                self._failed(e)
            self._writer = None


def probe_entries(entries: Sequence[Mapping[str, Any]], probe_interval: int) -> list[Mapping[str, Any]]:
    """The labelled ``entries`` the kNN probe reads (its memory or its queries); none when the probe is off."""
    return [e for e in entries if e.get("label") is not None] if probe_interval else []


def probe_loaders(train_loader: Any, val_loader: Any, probe_interval: int) -> list[Any] | None:
    """``[train_loader, val_loader]`` for the kNN probe, or None when the probe is off or either set is empty."""
    if not probe_interval or not len(train_loader.dataset) or not len(val_loader.dataset):
        return None
    return [train_loader, val_loader]


# the settings the monitor consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "probe_interval": described(integer(0), "epochs between kNN probes of the encoder, and after the last (0: never)"),
    "collapse_ratio": described(number(0, 1), "warn of collapse when the embedding spread is below this / sqrt(D)"),
}
