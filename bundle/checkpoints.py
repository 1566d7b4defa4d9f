"""Checkpoints: safe loads, pretrained-weight transfer, and resumable training with atomic writes.

MONAI's CheckpointSaver writes non-atomically (its DiskSaver uses ``atomic=False``) and names interval files
by epoch, so a killed run can leave a torn file and a resume has to guess a name. ``TrainingCheckpointer``
writes ``<ckpt_dir>/checkpoint.pt`` (everything needed to resume) after every epoch and ``<ckpt_dir>/model.pt``
(a plain state_dict, the best by the key metric) through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch import nn

from .atomic import atomic_save
from .settings import as_bool

__all__ = ["load_weights", "load_pretrained", "check_weights", "TrainingCheckpointer"]

logger = logging.getLogger(__name__)


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a state_dict with ``weights_only=True``; unwraps ``{"model"|"network"|"state_dict": sd}`` files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    for key in ("model", "network", "state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    # weights saved from DistributedDataParallel or torch.compile carry a wrapper prefix
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_pretrained(network: nn.Module, path: str | os.PathLike | None) -> dict[str, list[str]]:
    """Copy every tensor of ``path`` whose name and shape match ``network``; log what matched and what did not.

    Returns ``{"matched", "missing", "unexpected", "mismatched"}`` key lists. ``missing`` are the network's
    parameters the file does not provide (e.g. a new classification head), ``mismatched`` share a name but not
    a shape (e.g. a 1-channel reconstruction head loaded into a 2-channel segmentation head).
    """
    if not path:
        return {"matched": [], "missing": [], "unexpected": [], "mismatched": []}
    source = load_weights(path)
    target = network.state_dict()
    matched = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    mismatched = [k for k, v in source.items() if k in target and target[k].shape != v.shape]
    unexpected = [k for k in source if k not in target]
    missing = [k for k in target if k not in source]
    network.load_state_dict({k: source[k] for k in matched}, strict=False)

    def per_module(keys: list[str]) -> str:
        return ", ".join(f"{m} {n}" for m, n in sorted(Counter(k.split(".")[0] for k in keys).items())) or "none"

    totals = Counter(k.split(".")[0] for k in target)
    loaded = Counter(k.split(".")[0] for k in matched)
    logger.info(
        "pretrained_ckpt %s: %d of %d keys matched (%s)",
        path,
        len(matched),
        len(target),
        ", ".join(f"{m} {loaded.get(m, 0)}/{n}" for m, n in sorted(totals.items())),
    )
    if mismatched:
        logger.info("pretrained_ckpt: skipped for shape mismatch: %s", per_module(mismatched))
    if unexpected:
        logger.info("pretrained_ckpt: keys in the file that the network lacks: %s", per_module(unexpected))
    if not matched:
        raise ValueError(f"{path}: no key matches the network; is it a checkpoint of this bundle's encoder?")
    return {"matched": matched, "missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def check_weights(path: str | os.PathLike) -> str:
    """Stop with a clear message (no traceback) when the model file is missing; returns ``path``."""
    if not os.path.isfile(path):
        raise SystemExit(f"model weights not found: {path} (train first, or pass --ckpt_dir <folder with model.pt>)")
    return os.fspath(path)


class TrainingCheckpointer:
    """Resume state after every epoch and the best model by the validator's key metric, both written atomically.

    On start, an existing ``checkpoint.pt`` in ``ckpt_dir`` is loaded (``weights_only=True``) so that an
    interrupted run continues at the epoch after its last completed one.

    Args:
        ckpt_dir: output folder.
        save_dict: objects with ``state_dict`` to save and restore (network, optimizer, lr_scheduler); the trainer
            this handler is attached to is added.
        network: the module whose plain state_dict becomes ``model.pt``.
        validator: the evaluator whose ``key_metric`` selects the best model (higher is better); without one,
            the final weights are the model. List this handler after the ValidationHandler so that each epoch's
            resume state records that epoch's validation.
        key_metric: metric name in ``validator.state.metrics``.
        resume: load ``checkpoint.pt`` when it exists.
        best_filename: name (in ``ckpt_dir``) or path of the model file.
        last_filename: name (in ``ckpt_dir``) or path of the resume file; workflows sharing a folder use distinct names.
        model_state: callable returning the state_dict written as the model (default ``network.state_dict``),
            e.g. a pretraining method's ``export_state``.
    """

    def __init__(
        self,
        ckpt_dir: str,
        save_dict: dict[str, Any],
        network: nn.Module,
        validator: Engine | None = None,
        key_metric: str | None = None,
        resume: bool = True,
        best_filename: str = "model.pt",
        last_filename: str = "checkpoint.pt",
        model_state: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> None:
        resume = as_bool(resume, "resume")
        self.ckpt_dir, self.save_dict, self.network = ckpt_dir, dict(save_dict), network
        self.validator, self.key_metric, self.resume = validator, key_metric, resume
        self.best_path = os.path.join(ckpt_dir, best_filename)
        self.last_path = os.path.join(ckpt_dir, last_filename)
        self.model_state = model_state or network.state_dict
        self.best_metric, self.best_epoch = float("-inf"), -1
        self._trainer: Engine | None = None

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])

    def attach(self, trainer: Engine) -> None:
        """Register on the trainer (resume, last checkpoint) and on the validator (best model)."""
        self._trainer = trainer
        self.save_dict.setdefault("trainer", trainer)  # the engine's epoch/iteration: where a resumed run starts
        if self.resume and os.path.isfile(self.last_path):
            logger.info("resuming from %s", self.last_path)
            CheckpointLoader(self.last_path, {**self.save_dict, "checkpointer": self}, map_location="cpu").attach(
                trainer
            )
            trainer.add_event_handler(Events.STARTED, self._warn_if_finished)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._save_last)
        if self.validator is not None and self.key_metric:
            self.validator.add_event_handler(Events.COMPLETED, self._save_if_best)
        else:
            trainer.add_event_handler(Events.COMPLETED, self._save_best_unconditionally)

    def _warn_if_finished(self, trainer: Engine) -> None:
        if trainer.state.epoch >= trainer.state.max_epochs:
            logger.warning(
                "%s already holds %d of %d epochs: nothing left to train. Raise max_epochs to continue, or start "
                "over with another ckpt_dir or resume=false.",
                self.last_path,
                trainer.state.epoch,
                trainer.state.max_epochs,
            )

    def _save_last(self, engine: Engine) -> None:
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["checkpointer"] = self.state_dict()
        atomic_save(state, self.last_path)

    def _save_best_unconditionally(self, engine: Engine) -> None:
        atomic_save(self.model_state(), self.best_path)

    def _save_if_best(self, validator: Engine) -> None:
        value = validator.state.metrics.get(self.key_metric)
        if value is None or value != value:  # NaN (e.g. a class absent from validation) never wins
            if not os.path.exists(self.best_path):
                atomic_save(self.model_state(), self.best_path)
            return
        epoch = self._trainer.state.epoch if self._trainer is not None else validator.state.epoch
        if float(value) > self.best_metric:
            self.best_metric, self.best_epoch = float(value), epoch
            atomic_save(self.model_state(), self.best_path)
            logger.info("epoch %d: new best %s %.4f, saved %s", epoch, self.key_metric, value, self.best_path)
