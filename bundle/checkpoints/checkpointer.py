"""Resumable training with atomic writes.

MONAI's CheckpointSaver writes non-atomically (its DiskSaver uses ``atomic=False``) and names interval files
by epoch, so a killed run can leave a torn file and a resume has to guess a name. ``TrainingCheckpointer``
writes ``<ckpt_dir>/checkpoint.pt`` (everything needed to resume) after every epoch and ``<ckpt_dir>/model.pt``
(a plain state_dict, the best by the key metric) through a temporary file and ``os.replace``. Before each new
resume state is written, the current one becomes ``checkpoint.prev.pt`` (``previous_path``), so that a resume
still finds a usable state when the latest one is damaged. Nothing with NaN or infinite values is ever written.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch import nn

from ..atomic import WriteError, atomic_save, write_failed
from ..distributed import is_main_process, unwrap
from ..errors import fail
from ..values import as_bool
from .recipe import contradictions, make_recipe, read_recipe, recipe_path, write_recipe
from .weights import WeightsError, examples, first_sentence, mismatch, non_finite_problem, non_finite_tensors, read_file

__all__ = ["previous_path", "TrainingCheckpointer"]

logger = logging.getLogger(__name__)


def previous_path(last_path: str | os.PathLike) -> str:
    """Where the resume state before ``last_path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    stem, ext = os.path.splitext(os.fspath(last_path))
    return f"{stem}.prev{ext or '.pt'}"


class TrainingCheckpointer:
    """Resume state after every epoch and the best model by the validator's key metric, both written atomically.

    On attach (while the config is instantiated, before any training), an existing resume state in ``ckpt_dir``
    is read (``weights_only=True``) and checked against the objects it restores; the trainer continues at the
    epoch after its last completed one. A damaged latest state (truncated, corrupt, unsafe, incomplete, made by
    another configuration) is reported with a warning and the previous one (``previous_path``) is used; when
    neither is usable, the run stops with a message saying how to start over.

    Each new resume state is written after the current one is renamed to ``previous_path``, so a crash or a full
    disk during the write leaves a usable state behind. No file is written from weights holding NaN or infinite
    values: the run stops instead, keeping the files of the last good epoch. Under DDP every rank reads the
    resume state and only rank 0 writes; states and model files hold the plain module's keys either way.

    Args:
        ckpt_dir: output folder.
        save_dict: objects with ``state_dict`` to save and restore (network, optimizer, lr_scheduler); the trainer
            this handler is attached to is added.
        network: the module whose plain state_dict becomes ``model.pt``.
        validator: the evaluator whose ``key_metric`` selects the best model (higher is better); without one,
            the final weights are the model. List this handler after the ValidationHandler so that each epoch's
            resume state records that epoch's validation.
        key_metric: metric name in ``validator.state.metrics``.
        resume: load the resume state when it exists. A learning rate changed since it was written is kept:
            the schedule continues scaled to the new one.
        best_filename: name (in ``ckpt_dir``) or path of the model file.
        last_filename: name (in ``ckpt_dir``) or path of the resume file; workflows sharing a folder use distinct names.
        model_state: callable returning the state_dict written as the model (default ``network.state_dict``),
            e.g. a pretraining method's ``export_state``.
        recipe: the settings the weights are made with (``bundle.checkpoints.recipe.RECIPE_KEYS`` and e.g.
            ``ssl_method``), written beside the model file and the resume state; a resume state made with other
            settings is refused, naming them.
        recipe_kind: ``"model"`` (fine-tuned) or ``"pretrained"`` (an encoder to fine-tune).
        keep_resume_state: keep the resume states when the run has trained all its epochs (to raise max_epochs
            later and continue); by default they are removed then, leaving the model file and its recipe.
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
        recipe: Mapping[str, Any] | None = None,
        recipe_kind: str = "model",
        keep_resume_state: bool = False,
    ) -> None:
        resume = as_bool(resume, "resume")
        self.keep_resume_state = as_bool(keep_resume_state, "keep_resume_state")
        # plain modules: a resume state or model file of a DDP run loads on one process and the other way round
        network = unwrap(network)
        self.ckpt_dir, self.network = ckpt_dir, network
        self.save_dict = {k: unwrap(v) if isinstance(v, nn.Module) else v for k, v in save_dict.items()}
        self.validator, self.key_metric, self.resume = validator, key_metric, resume
        self.best_path = os.path.join(ckpt_dir, best_filename)
        self.last_path = os.path.join(ckpt_dir, last_filename)
        self.prev_path = previous_path(self.last_path)
        self.model_state = model_state or network.state_dict
        self.recipe = make_recipe(recipe, recipe_kind) if recipe is not None else None
        self.best_metric, self.best_epoch = float("-inf"), -1
        self._trainer: Engine | None = None
        self._resume_state: dict[str, Any] | None = None
        self._resume_path: str | None = None
        # whether the files at last_path / prev_path are states of this run (resumed from or written by it):
        # only then is the latest one kept as the previous one, and a stale previous one is never fallen back to
        self._last_ours = self._prev_ours = False
        self._recipe_written = False
        self._refused: str | None = None  # a model file not written during validation, reported by the trainer
        self._epoch_of: dict[str, int | None] = {}  # the epoch each resume state of this run holds, for messages

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])

    def final_metrics(self) -> dict[str, float]:
        """``{"best_<key_metric>": value, "best_epoch": epoch}`` of the model file (a resumed run's included), for
        a run's record (``bundle.tracking``); empty when no validation selected it."""
        if self.validator is None or not self.key_metric or self.best_epoch < 1:
            return {}
        return {f"best_{self.key_metric}": self.best_metric, "best_epoch": float(self.best_epoch)}

    def attach(self, trainer: Engine) -> None:
        """Read and check the resume state, then register on the trainer (resume, last checkpoint) and on the
        validator (best model)."""
        self._trainer = trainer
        self.save_dict.setdefault("trainer", trainer)  # the engine's epoch/iteration: where a resumed run starts
        if self.resume:
            self._select_resume_state()
            if self._resume_state is not None:
                trainer.add_event_handler(Events.STARTED, self._restore)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._save_last)
        if self.validator is not None and self.key_metric:
            self.validator.add_event_handler(Events.COMPLETED, self._save_if_best)
            trainer.add_event_handler(Events.COMPLETED, self._report_refused)
        else:
            trainer.add_event_handler(Events.COMPLETED, self._save_best_unconditionally)
        trainer.add_event_handler(Events.COMPLETED, self._remove_resume_state)

    # ---- resume -------------------------------------------------------------------------------------------------

    def _select_resume_state(self) -> None:
        """Keep the newest usable resume state (latest, else previous) for ``_restore``; fail when none is usable."""
        if not (os.path.lexists(self.last_path) or os.path.lexists(self.prev_path)):
            return
        problems: list[tuple[str, str]] = []
        for path in (self.last_path, self.prev_path):
            if not os.path.lexists(path):
                if path == self.last_path:
                    problems.append((path, "is missing (a write was interrupted?)"))
                continue
            try:
                state = self._validated(path)
            except WeightsError as e:
                problems.append((path, e.problem))
                continue
            self._check_resume_recipe(path)
            for bad, problem in problems:
                logger.warning("resume state %s %s; resuming from the previous one, %s", bad, problem, path)
            logger.info("resuming from %s", path)
            self._resume_path, self._resume_state = path, state
            self._last_ours = path == self.last_path
            self._prev_ours = True
            return
        told = "; ".join(f"{p} {why}" for p, why in problems)
        fail(
            f"cannot resume training: {told}. To start over, pass --resume false, delete "
            f"{' and '.join(p for p, _ in problems)}, or use another --ckpt_dir"
        )

    def _check_resume_recipe(self, path: str) -> None:
        """A resume state made with other network settings would continue another run under this one's name."""
        made = read_recipe(self.last_path, "resume state")
        found = contradictions(made, self.recipe or {})
        if found:
            told = "; ".join(f"{k} {json.dumps(r)} there, {json.dumps(g)} now" for k, g, r in found)
            fail(
                f"cannot resume training from {path}: it was made with other settings ({told}; see "
                f"{recipe_path(self.last_path)}). Give the same settings to continue it, or pass --resume false or "
                "another --ckpt_dir to start over"
            )

    def _validated(self, path: str) -> dict[str, Any]:
        """The resume state in ``path`` if it can restore every object of ``save_dict``; else ``WeightsError``."""
        name = "resume state"
        state = read_file(path, name)
        if not isinstance(state, Mapping):
            raise WeightsError(path, f"holds a {type(state).__name__}, not a resume state", name)
        missing = [k for k in (*self.save_dict, "checkpointer") if k not in state]
        if missing:
            raise WeightsError(
                path, f"lacks {', '.join(missing)} (a model file, or a resume state of another config?)", name
            )
        for key, obj in {**self.save_dict, "checkpointer": self}.items():
            problem = _restore_problem(obj, state[key])
            if problem:
                raise WeightsError(path, f"cannot restore {key}: {problem}", name)
        bad = non_finite_tensors(state)
        if bad:
            raise WeightsError(path, non_finite_problem(bad), name)
        return dict(state)

    def _restore(self, trainer: Engine) -> None:
        """STARTED: apply the resume state read at attach; a changed learning rate is kept."""
        state, path = self._resume_state, self._resume_path
        self._resume_state = None  # the tensors are copied into the objects; the state is not kept in memory
        optimizers = [o for o in self.save_dict.values() if isinstance(o, torch.optim.Optimizer)]
        configured = [[g.get("initial_lr", g["lr"]) for g in o.param_groups] for o in optimizers]
        max_epochs = trainer.state.max_epochs
        try:
            Checkpoint.load_objects(to_load={**self.save_dict, "checkpointer": self}, checkpoint=state, strict=True)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            fail(
                f"resume state {path} cannot be applied ({first_sentence(e)}). To start over, pass --resume false, "
                f"delete {path}, or use another --ckpt_dir",
                cause=e,
            )
        trainer.state.max_epochs = max_epochs  # the configured number of epochs, not the one saved
        for optimizer, lrs in zip(optimizers, configured):
            self._keep_learning_rate(optimizer, lrs, path)
        self._epoch_of[path] = trainer.state.epoch
        logger.info("restored %s: continuing after epoch %d", path, trainer.state.epoch)
        self._warn_if_finished(trainer)

    def _keep_learning_rate(self, optimizer: torch.optim.Optimizer, configured: list[float], path: str) -> None:
        """Continue with the configured learning rate where it differs from the resumed one, at the same point
        of the schedule (every learning rate of the optimizer and its schedulers scaled by new/old)."""
        saved = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        if all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(configured, saved)):
            return
        factors = [new / old if old > 0 else None for new, old in zip(configured, saved)]
        for group, new, factor in zip(optimizer.param_groups, configured, factors):
            group["lr"] = group["lr"] * factor if factor is not None else new
            if "initial_lr" in group:
                group["initial_lr"] = new
        for obj in self.save_dict.values():
            if getattr(obj, "optimizer", None) is optimizer and hasattr(obj, "base_lrs"):
                obj.base_lrs = list(configured)
                if hasattr(obj, "_last_lr"):
                    obj._last_lr = [g["lr"] for g in optimizer.param_groups]
        logger.info(
            "learning rate changed since %s was written (%s -> %s): continuing with the new one",
            path,
            ", ".join(f"{v:g}" for v in saved),
            ", ".join(f"{v:g}" for v in configured),
        )

    def _warn_if_finished(self, trainer: Engine) -> None:
        if trainer.state.epoch >= trainer.state.max_epochs:
            more = "more than" if trainer.state.epoch > trainer.state.max_epochs else "of"
            logger.warning(
                "%s already holds %d epochs, %s max_epochs %d: nothing left to train. Raise max_epochs to continue, "
                "or start over with another ckpt_dir or resume=false.",
                self._resume_path or self.last_path,
                trainer.state.epoch,
                more,
                trainer.state.max_epochs,
            )

    # ---- saving -------------------------------------------------------------------------------------------------

    def _refusal(self, path: str, bad: list[str], epoch: int) -> str:
        kept = "The file of the last good epoch is kept" if os.path.exists(path) else "No such file existed yet"
        resumable = any(os.path.isfile(p) for p in (self.last_path, self.prev_path))
        rerun = f"to resume from the last good state in {self.ckpt_dir}" if resumable else "to start over"
        return (
            f"refusing to write {path}: after epoch {epoch} the weights hold NaN or infinite values in {len(bad)} "
            f"tensor{'s' if len(bad) > 1 else ''} ({examples(bad)}): training diverged. {kept}; rerun with a "
            f"lower --learning_rate {rerun} (with --amp true, also try --amp false)"
        )

    def _kept(self) -> tuple[str, str]:
        """What a failed write leaves in ``ckpt_dir`` (for its message) and how a rerun goes on from there."""
        parts, resumes = [], None
        if os.path.isfile(self.best_path):
            best = f" (epoch {self.best_epoch})" if self.best_epoch > 0 else ""
            parts.append(f"the previous {os.path.basename(self.best_path)}{best}")
        for path, ours in ((self.last_path, self._last_ours), (self.prev_path, self._prev_ours)):
            if ours and os.path.isfile(path):
                resumes = self._epoch_of.get(path)
                epoch = f" from epoch {resumes}" if resumes is not None else ""
                parts.append(f"the resume state{epoch} ({path})")
                break
        if not parts:
            return "no model file or resume state was written yet", "then rerun"
        kept = f"{' and '.join(parts)} {'are' if len(parts) > 1 else 'is'} kept"
        todo = f"then rerun the same command: it continues after epoch {resumes}" if resumes else "then rerun"
        return kept, todo

    def _write(self, state: Any, path: str, what: str, recipe: Mapping[str, Any] | None = None) -> None:
        """Write ``state`` to ``path`` atomically, then ``recipe`` beside it; a failure ends the run saying what
        ``ckpt_dir`` still holds."""
        if not is_main_process():  # under DDP every rank holds the same weights: rank 0 writes them
            return
        kept, todo = self._kept()
        try:
            atomic_save(dict(state), path, what=what, kept=kept)
            if recipe:
                write_recipe(path, recipe)
        except WriteError as e:  # the same message, with how to continue from the files kept
            if e.path in (None, os.path.abspath(path)):
                write_failed(path, e, what, kept, f"or pass another --ckpt_dir; {todo}")
            name = os.path.basename(path)
            write_failed(e.path, e, f"the recipe of {name}", f"the new {name} is written without it", todo)

    def _save_last(self, engine: Engine) -> None:
        self._report_refused(engine)
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["checkpointer"] = self.state_dict()
        bad = non_finite_tensors(state)
        if bad:
            fail(self._refusal(self.last_path, bad, engine.state.epoch))
        if not is_main_process():
            return
        try:
            if self._last_ours and os.path.isfile(self.last_path):
                os.replace(self.last_path, self.prev_path)
                self._prev_ours = True
                self._epoch_of[self.prev_path] = self._epoch_of.pop(self.last_path, None)
            elif not self._prev_ours and os.path.lexists(self.prev_path):
                os.remove(self.prev_path)  # left by an earlier run: a fall-back to it would resume that run
        except OSError as e:
            kept, todo = self._kept()
            write_failed(self.prev_path, e, "the previous resume state", kept, f"or pass another --ckpt_dir; {todo}")
        # the recipe once a run: its settings do not change
        self._write(state, self.last_path, "the resume state", None if self._recipe_written else self.recipe)
        self._recipe_written = self.recipe is not None
        self._last_ours = True
        self._epoch_of[self.last_path] = engine.state.epoch

    def _save_model(self, engine: Engine) -> bool:
        """Write the model file; False (and nothing written) when its weights are not finite."""
        state = self.model_state()
        bad = non_finite_tensors(state)
        if bad:
            self._refused = self._refusal(self.best_path, bad, engine.state.epoch)
            return False
        self._write(state, self.best_path, "the model", self.recipe)
        return True

    def _report_refused(self, engine: Engine) -> None:
        # raised from the trainer, not from the validator's handlers, which would log a traceback around it
        if self._refused:
            fail(self._refused)

    def _save_best_unconditionally(self, engine: Engine) -> None:
        if not self._save_model(engine):
            self._report_refused(engine)

    def _save_if_best(self, validator: Engine) -> None:
        trainer = self._trainer if self._trainer is not None else validator
        value = validator.state.metrics.get(self.key_metric)
        if value is None or value != value:  # NaN (e.g. a class absent from validation) never wins
            if not os.path.exists(self.best_path):
                self._save_model(trainer)
            return
        if float(value) > self.best_metric and self._save_model(trainer):
            self.best_metric, self.best_epoch = float(value), trainer.state.epoch
            trainer.state.model_saved = (trainer.state.epoch, self.best_path)  # for the epoch's summary line
            # the epoch's summary line (bundle.engines.progress.EpochSummary) says so
            logger.debug(
                "epoch %d: new best %s %.4f, saved %s", trainer.state.epoch, self.key_metric, value, self.best_path
            )

    def _remove_resume_state(self, trainer: Engine) -> None:
        """After the last epoch: remove this run's resume states (two full copies of the training state, 2 to 3
        times the model's size each), unless ``keep_resume_state``."""
        if self.keep_resume_state or trainer.state.epoch < trainer.state.max_epochs or not is_main_process():
            return
        ours = [p for p, o in ((self.last_path, self._last_ours), (self.prev_path, self._prev_ours)) if o]
        for path in ours + ([recipe_path(self.last_path)] if ours else []):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as e:  # the run's results are written: a leftover is worth a warning, not a failure
                logger.warning("could not remove the resume state %s (%s): delete it by hand", path, e.strerror)


def _restore_problem(obj: Any, saved: Any) -> str | None:
    """Why ``obj.load_state_dict(saved)`` would fail, in a few words; None when it would not."""
    if not isinstance(saved, Mapping):
        return f"a {type(saved).__name__}, not a state_dict"
    if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        obj = obj.module  # ignite's load_objects loads into the wrapped module
    if isinstance(obj, nn.Module):
        return mismatch(saved, obj.state_dict())
    if isinstance(obj, torch.optim.Optimizer):
        groups = saved.get("param_groups")
        if not isinstance(groups, list) or not isinstance(saved.get("state"), Mapping):
            return "not an optimizer's state_dict"
        have = [len(g.get("params", [])) if isinstance(g, Mapping) else -1 for g in groups]
        want = [len(g["params"]) for g in obj.param_groups]
        if have != want:
            return f"parameter groups of sizes {have}, the configured optimizer has {want}"
        return None
    if isinstance(obj, Engine):
        if not {"epoch_length", "max_epochs"} <= set(saved) or not {"iteration", "epoch"} & set(saved):
            return "not an ignite engine's state_dict (epoch_length, max_epochs, iteration)"
        return None
    if isinstance(obj, TrainingCheckpointer) and not {"best_metric", "best_epoch"} <= set(saved):
        return "lacks best_metric, best_epoch"
    return None
