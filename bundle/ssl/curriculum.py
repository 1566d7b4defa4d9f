"""Curricula of pretraining stages: pretraining configs run one after another, each from the previous weights.

A curriculum (``configs/pretrain_curriculum.json``) is an ordered list of stages, each
``{"name": ..., "config": <pretraining config>, "overrides": {<id>: <value>, ...}}``. ``run_curriculum`` runs
every stage in this process as a MONAI ``ConfigWorkflow`` with its own ``ckpt_dir`` and ``output_dir``
(``<output_root>/<NN>_<name>/`` and ``.../eval``), and starts stage i from the weights stage i-1 produced.

Checking first: before any stage trains, every stage is checked as declared (its config file exists and
every id it overrides is one of that config's), and each stage that is about to run gets its own config's
settings check with the values it will be given, so a bad setting of the last stage stops the curriculum
before the first one trains. Every such failure, a corrupt state file, and a stage's own setting error, ends
in one message naming the stage (``bundle.errors.fail``: exit status 1, no traceback outside debug mode).

Resuming: ``<output_root>/curriculum_state.json`` (written atomically) marks the finished stages, so a rerun
skips them; the unfinished stage resumes at its last completed epoch from its own resume checkpoint
(``TrainingCheckpointer``). A finished stage whose settings have changed since is an error, not a silent
retrain: its successors were trained from it.

Carrying weights forward: a stage exports only what it trains (a contrastive stage: ``encoder.*``; inpainting
also ``decoder.*``). With ``carry_forward`` the weights handed on are the previous ones updated with the
stage's export, so an inpainting decoder survives a later contrastive stage and fine-tuning gets both. That
decoder was trained against the encoder as it was at the end of its stage; fine-tuning adapts the two.

Tracking: with ``--tracking mlflow`` the curriculum records one MLflow run in ``<output_root>/mlruns.db`` and each
stage that runs records its own, nested under it (``bundle.tracking.ParentRun``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from .. import overrides as override_ids
from ..atomic import atomic_write_json, make_folder
from ..checkpoints import load_pretrained, load_weights, read_recipe, save_weights
from ..errors import UserError, fail
from ..tracking import ParentRun
from ..values import Rule, as_bool, boolean, described, integer, optional
from ..workflow import run as run_config

__all__ = ["CurriculumError", "run_curriculum", "load_state", "STATE_FILE", "stage_dirs"]

logger = logging.getLogger(__name__)

STATE_FILE = "curriculum_state.json"
STAGE_KEYS = ("name", "config", "overrides")
MANAGED_IDS = ("ckpt_dir", "output_dir")  # set by the curriculum for every stage


class CurriculumError(ValueError):
    """A curriculum that cannot run as declared; the message names the stage.

    Raised by this module's helpers (``load_state`` included); ``run_curriculum`` ends with it through
    ``bundle.errors.fail``, so that the run stops with the message alone instead of MONAI's wrapped traceback.
    """


def load_state(output_root: str) -> dict[str, Any]:
    """The curriculum's state file (``{"stages": {stage_id: {...}}}``), empty when there is none yet."""
    path = os.path.join(output_root, STATE_FILE)
    if not os.path.isfile(path):
        return {"stages": {}}
    try:
        with open(path) as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CurriculumError(
            f"{path}: unreadable state file ({e}); move it away to start the curriculum over"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise CurriculumError(f"{path}: not a curriculum state file")
    return state


def _check_stages(stages: Sequence[Mapping[str, Any]], bundle_root: str) -> list[dict[str, Any]]:
    if not isinstance(stages, Sequence) or isinstance(stages, str) or not stages:
        raise CurriculumError("stages must be a non-empty list of {'name', 'config', 'overrides'} entries")
    checked, names = [], set()
    for i, stage in enumerate(stages):
        where = f"stages[{i}]"
        if not isinstance(stage, Mapping):
            raise CurriculumError(f"{where}: expected a mapping with 'config', got {type(stage).__name__}")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise CurriculumError(f"{where}: unknown keys {unknown} (allowed: {list(STAGE_KEYS)})")
        config = stage.get("config")
        if not isinstance(config, str) or not config:
            raise CurriculumError(f"{where}: 'config' must be the path of a pretraining config")
        path = config if os.path.isabs(config) else os.path.join(bundle_root, config)
        if not os.path.isfile(path):
            raise CurriculumError(f"{where}: config file not found: {path}")
        overrides = stage.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise CurriculumError(f"{where}: 'overrides' must be a mapping of config ids to values")
        managed = sorted(set(overrides) & set(MANAGED_IDS))
        if managed:
            raise CurriculumError(f"{where}: {managed} are set by the curriculum (<output_root>/<stage>/); remove them")
        name = stage.get("name") or os.path.splitext(os.path.basename(config))[0]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))
        _check_override_ids(f"{where} ({name})", path, config, overrides)
        if name in names:
            raise CurriculumError(f"{where}: stage name {name!r} is used twice; give the stages distinct names")
        names.add(name)
        checked.append({"id": f"{i + 1:02d}_{name}", "config": path, "given": config, "overrides": dict(overrides)})
    return checked


def _check_override_ids(where: str, config: str, given: str, overrides: Mapping[str, Any]) -> None:
    """Every id a stage overrides must be one of its config's: an unknown id (a typo) would be ignored silently.

    ``pretrained_ckpt`` is always allowed: a config without that id gets the weights loaded into its network.
    """
    names = [k for k in overrides if k != "pretrained_ckpt"]
    message = override_ids.problem([config], names, shown=given)
    if message:
        raise CurriculumError(f"{where}: {message}")


def stage_dirs(output_root: str, stage_id: str) -> tuple[str, str]:
    """``(ckpt_dir, output_dir)`` of a stage."""
    ckpt_dir = os.path.join(output_root, stage_id)
    return ckpt_dir, os.path.join(ckpt_dir, "pretraining")


def _fingerprint(config: str, overrides: Mapping[str, Any]) -> str:
    text = json.dumps({"config": os.path.abspath(config), "overrides": overrides}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_init(config: str, overrides: dict[str, Any], init: str | None) -> tuple[dict[str, Any], bool]:
    """The stage's overrides with its initial weights, and whether its config declares ``pretrained_ckpt``.

    Every pretraining config of this bundle loads ``pretrained_ckpt`` at the start of ``run``; for a config without
    that id the weights are loaded into its ``network`` by ``_run_stage``.
    """
    from monai.bundle import ConfigParser

    declares_init = "pretrained_ckpt" in ConfigParser.load_config_file(config)
    return ({**overrides, "pretrained_ckpt": init} if declares_init else dict(overrides)), declares_init


def _stage_label(stage: Mapping[str, Any]) -> str:
    return f"curriculum stage {stage['id']} ({stage['given']})"


def _preflight(stage: Mapping[str, Any], overrides: dict[str, Any], init: str | None) -> None:
    """Run the stage config's own settings check (its ``bundle.settings.check`` step, the first of ``run``) with
    the values the stage will get, without building anything; a bad setting stops here, naming the stage. The
    ids the curriculum gives every stage (``defaults``, ``force``) must be the stage config's too."""
    from monai.bundle import ConfigParser

    names = [k for k in overrides if k != "pretrained_ckpt"]
    unknown = override_ids.problem([stage["config"]], names, shown=stage["given"])
    if unknown:
        fail(f"{_stage_label(stage)}: {unknown}")
    parser = ConfigParser()
    parser.read_config(stage["config"])
    parser.update(_with_init(stage["config"], overrides, init)[0])
    steps = parser.get("run") or []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, str) and "settings.check(" in step:
            try:
                parser.get_parsed_content(f"run#{i}")
            except UserError as e:
                fail(f"{_stage_label(stage)}: {e.message}", e)


def _run_stage(
    config: str,
    overrides: dict[str, Any],
    init: str | None,
    meta_file: str | None,
    tracking: tuple[dict | None, dict[str, str]] = (None, {}),
) -> str:
    """Run one pretraining config, with ``tracking`` (its settings and ids: ``ParentRun.stage``); returns its
    ``pretrained_out``."""
    overrides, declares_init = _with_init(config, overrides, init)

    def load_init(workflow: Any) -> None:  # a config without pretrained_ckpt gets the weights here
        if init and not declares_init:
            load_pretrained(workflow.parser.get_parsed_content("network"), init)

    settings, ids = tracking
    run = run_config(config, {**overrides, **ids}, before_run=load_init, meta_file=meta_file, tracking=settings)
    out = run.get("pretrained_out")
    if not out or not os.path.isfile(out):
        raise CurriculumError(f"{config}: the stage finished without writing its pretrained_out ({out})")
    return os.path.abspath(out)


def run_curriculum(
    stages: Sequence[Mapping[str, Any]],
    output_root: str,
    defaults: Mapping[str, Any] | None = None,
    force: Mapping[str, Any] | None = None,
    pretrained_ckpt: str | None = None,
    final_out: str | None = None,
    bundle_root: str = ".",
    meta_file: str | None = None,
    carry_forward: bool = True,
    tracking: ParentRun | None = None,
) -> str:
    """Run the stages in order, skipping those already finished; returns the final weights' path.

    Args:
        stages: ``[{"name", "config", "overrides"}]``; ``config`` is relative to ``bundle_root``.
        output_root: folder of the stage folders and of ``curriculum_state.json``.
        defaults: ids given to every stage unless its ``overrides`` set them (None values are skipped), e.g.
            ``dataset_dir``, ``image_size``.
        force: ids given to every stage over its ``overrides`` (None values are skipped), e.g. ``max_epochs``
            for a quick run.
        pretrained_ckpt: initial weights of the first stage (e.g. converted ImageNet weights); a stage's own
            ``pretrained_ckpt`` override wins over what the curriculum hands it.
        final_out: where to copy the final weights (fine-tuning loads them with ``--pretrained_ckpt``).
        bundle_root: base of relative config paths.
        meta_file: metadata for the stage workflows (None: ``configs/metadata.json`` beside each config).
        carry_forward: hand on the previous weights updated with each stage's export (see the module docstring).
        tracking: the curriculum's MLflow run (``--tracking mlflow``), each stage that runs recorded under it.

    Raises:
        UserError: a curriculum that cannot run as declared (a stage config that is missing or sets an unknown
            id, a corrupt state file, a finished stage whose settings changed) or a stage's bad setting: one
            message naming the stage (``DebugUserError`` with the traceback in debug mode).
    """
    try:
        return _run_curriculum(
            stages,
            output_root,
            defaults,
            force,
            pretrained_ckpt,
            final_out,
            bundle_root,
            meta_file,
            carry_forward,
            tracking,
        )
    except CurriculumError as e:
        fail(str(e), e)


def _stage_overrides(
    stage: Mapping[str, Any], output_root: str, base: Mapping[str, Any], forced: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None, bool]:
    """(overrides without ``pretrained_ckpt``, the stage's own initial weights, whether it names them)."""
    ckpt_dir, output_dir = stage_dirs(output_root, stage["id"])
    overrides = {**base, **stage["overrides"], **forced, "ckpt_dir": ckpt_dir, "output_dir": output_dir}
    overrides.pop("pretrained_ckpt", None)
    own = "pretrained_ckpt" in stage["overrides"]
    return overrides, stage["overrides"].get("pretrained_ckpt"), own


def _finished_prefix(
    checked: Sequence[Mapping[str, Any]],
    plans: Sequence[tuple[dict[str, Any], str | None, bool]],
    state: Mapping[str, Any],
    weights: str | None,
    state_path: str,
) -> tuple[int, str | None]:
    """How many leading stages are finished with the same settings (skipped), and the weights they hand on.

    Raises:
        CurriculumError: a finished stage's settings changed since: later stages were trained from it.
    """
    for i, (stage, (overrides, own_init, own)) in enumerate(zip(checked, plans)):
        sid = stage["id"]
        record = state["stages"].get(sid)
        if not record or record.get("status") != "done":
            return i, weights
        init = own_init if own else weights
        if record.get("fingerprint") != _fingerprint(stage["config"], {**overrides, "pretrained_ckpt": init}):
            raise CurriculumError(
                f"stage {sid} was finished with other settings (config or overrides changed since): later "
                f"stages were trained from it. Use a new output_root, or delete {overrides['ckpt_dir']} and its "
                f"entry in {state_path} to redo it and the stages after it."
            )
        if not os.path.isfile(record.get("handed_on", "")):
            logger.warning("curriculum: stage %s is marked finished but its weights are gone; running it again", sid)
            return i, weights
        logger.info("curriculum: stage %s already finished, skipped (weights %s)", sid, record["handed_on"])
        weights = record["handed_on"]
    return len(checked), weights


def _plans(
    checked: Sequence[Mapping[str, Any]],
    output_root: str,
    defaults: Mapping[str, Any] | None,
    force: Mapping[str, Any] | None,
) -> list[tuple[dict[str, Any], str | None, bool]]:
    """Each stage's (overrides, own initial weights, whether it names them) from the defaults and forced ids that
    are set."""
    # None = "not set"; keys starting with "_" are config annotations such as _desc_
    base = {k: v for k, v in (defaults or {}).items() if v is not None and not k.startswith("_")}
    forced = {k: v for k, v in (force or {}).items() if v is not None and not k.startswith("_")}
    return [_stage_overrides(stage, output_root, base, forced) for stage in checked]


def _preflight_unfinished(
    checked: Sequence[Mapping[str, Any]],
    plans: Sequence[tuple[dict[str, Any], str | None, bool]],
    first: int,
    weights: str | None,
) -> None:
    """Check every stage left to run before the first of them trains."""
    # the weights of a stage after the first one to run do not exist yet, so its check sees none unless it names
    # its own
    for i in range(first, len(checked)):
        overrides, own_init, own = plans[i]
        _preflight(checked[i], overrides, own_init if own else (weights if i == first else None))


def _hand_on(init: str | None, exported: str, ckpt_dir: str, carry_forward: bool) -> str:
    """The weights a stage hands on: its export, or with ``carry_forward`` the initial weights updated with it."""
    if not (carry_forward and init):
        return exported
    merged = {**load_weights(init), **load_weights(exported)}
    handed_on = os.path.join(ckpt_dir, "curriculum_weights.pt")
    save_weights(merged, handed_on, read_recipe(exported))
    return handed_on


def _run_unfinished_stage(
    stage: Mapping[str, Any],
    plan: tuple[dict[str, Any], str | None, bool],
    weights: str | None,
    state: dict[str, Any],
    state_path: str,
    meta_file: str | None,
    carry_forward: bool,
    ran_before: bool,
    tracking: ParentRun | None = None,
) -> str:
    """Run one stage from the weights handed to it (or its own) and mark it finished; the weights it hands on."""
    overrides, own_init, own = plan
    sid = stage["id"]
    ckpt_dir = overrides["ckpt_dir"]
    init = own_init if own else weights
    fingerprint = _fingerprint(stage["config"], {**overrides, "pretrained_ckpt": init})
    if ran_before and os.path.isdir(ckpt_dir):
        logger.warning(
            "curriculum: stage %s ran before from other weights; it continues from its resume checkpoint in %s "
            "if one is there (delete that folder to retrain it from the new weights)",
            sid,
            ckpt_dir,
        )
    # this stage and every later one are unfinished until they run again
    state["stages"] = {k: v for k, v in state["stages"].items() if k < sid}
    atomic_write_json(state, state_path, default=str)
    logger.info("curriculum: stage %s (%s) from %s", sid, os.path.relpath(stage["config"]), init or "scratch")
    started = time.time()
    try:
        stage_tracking = tracking.stage(sid) if tracking is not None else (None, {})
        exported = _run_stage(stage["config"], overrides, init, meta_file, stage_tracking)
    except UserError as e:  # the stage's own one-line failure: say which stage it was
        fail(f"{_stage_label(stage)}: {e.message}", e)
    handed_on = _hand_on(init, exported, ckpt_dir, carry_forward)
    state["stages"][sid] = {
        "status": "done",
        "config": stage["config"],
        "fingerprint": fingerprint,
        "initial_weights": init,
        "exported": exported,
        "handed_on": handed_on,
        "seconds": round(time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(state, state_path, default=str)
    logger.info("curriculum: stage %s finished, weights %s", sid, handed_on)
    return handed_on


def _publish(weights: str | None, final_out: str | None, state: dict[str, Any], state_path: str) -> str:
    """Copy the final weights to ``final_out`` (when given) and record them in the state file; their path."""
    if weights is None:  # unreachable: at least one stage ran or was skipped with its weights
        raise CurriculumError("no stage produced weights")
    if final_out:
        save_weights(load_weights(weights), final_out, read_recipe(weights))
        weights = os.path.abspath(final_out)
    state["final"] = weights
    atomic_write_json(state, state_path, default=str)
    logger.info("curriculum: done; final weights %s (fine-tune: configs/train.json --pretrained_ckpt <it>)", weights)
    return weights


def _run_curriculum(
    stages: Sequence[Mapping[str, Any]],
    output_root: str,
    defaults: Mapping[str, Any] | None,
    force: Mapping[str, Any] | None,
    pretrained_ckpt: str | None,
    final_out: str | None,
    bundle_root: str,
    meta_file: str | None,
    carry_forward: bool,
    tracking: ParentRun | None = None,
) -> str:
    """``run_curriculum`` without the translation of ``CurriculumError`` into one message."""
    try:
        carry_forward = as_bool(carry_forward, "carry_forward")
    except ValueError as e:
        raise CurriculumError(str(e)) from None

    checked = _check_stages(stages, bundle_root)
    output_root = os.path.abspath(output_root)
    make_folder(output_root, "the output root")
    state_path = os.path.join(output_root, STATE_FILE)
    state = load_state(output_root)
    plans = _plans(checked, output_root, defaults, force)
    first, weights = _finished_prefix(checked, plans, state, pretrained_ckpt, state_path)
    _preflight_unfinished(checked, plans, first, weights)
    earlier_records = dict(state["stages"])
    with tracking.recording() if tracking is not None else nullcontext():
        for i in range(first, len(checked)):
            ran_before = i > first and bool(earlier_records.get(checked[i]["id"]))
            weights = _run_unfinished_stage(
                checked[i], plans[i], weights, state, state_path, meta_file, carry_forward, ran_before, tracking
            )
        return _publish(weights, final_out, state, state_path)


RULES: dict[str, Rule] = {
    "carry_forward": described(boolean, "hand on the previous weights updated with each stage's export")
}  # the setting the curriculum consumes (bundle.settings)
# a curriculum's max_epochs may be null: each stage then keeps its own
WORKFLOW_RULES: dict[str, dict[str, Rule]] = {
    "curriculum": {"max_epochs": described(optional(integer(1)), "epochs of every stage; null keeps each stage's own")}
}
