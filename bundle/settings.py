"""Settings: every id's rule, gathered from the components that consume it, and a check before any work.

``check`` is the first step of every config's ``run`` (not ``initialize``: ``monai.bundle.load`` initialises a
workflow only to build its network, from folders where the data need not exist): it is given the config's
``settings`` (a mapping of id to resolved value) and stops the run with one message listing every bad setting,
its value and what is allowed, before a dataset is cached or a network built. Being that first step, it also
checks the ids of a ``python -m monai.bundle run`` command line before the values (``bundle.overrides``): the
configs need no step of their own for it, and no workflow runs without it.

Each component declares the rules of the ids it consumes beside the registry they check (``RULES``; rules over
several ids in ``CHECKS``; ids whose allowed values depend on the workflow in ``WORKFLOW_RULES``), as
``bundle.networks.multitask.RULES`` does for ``backbone``. This module sits on top: it imports them, and holds
only the ids the configs consume themselves (folders, the loop, the optimiser, devices). Each id has one rule,
whichever config it appears in; ``make configs`` derives each config's ``settings`` from its ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from . import checkpoints, losses, overrides, saliency, tracking
from .data import cache, datalist, leakage, precision, views
from .engines import progress
from .errors import fail, set_debug
from .evaluation import bootstrap
from .inference import inputs, tensorrt, writer
from .networks import freezing, multitask
from .ssl import curriculum, inpainting, masking, methods, moco, monitor, snapshots
from .values import (
    AMP_DTYPES,
    Check,
    Rule,
    as_bool,
    boolean,
    choice,
    described,
    device,
    device_type,
    existing_folder,
    integer,
    is_true,
    number,
)
from .values import option as value_option
from .values import output_folder, show

__all__ = ["check", "option", "RULES", "WORKFLOW_RULES", "WORKFLOWS", "CHECKS"]

# the components that consume settings, each with its RULES (and CHECKS, WORKFLOW_RULES where it has them)
COMPONENTS: tuple[ModuleType, ...] = (
    datalist,
    leakage,
    cache,
    precision,
    views,
    multitask,
    freezing,
    losses,
    checkpoints,
    methods,
    moco,
    masking,
    inpainting,
    monitor,
    snapshots,
    curriculum,
    progress,
    saliency,
    inputs,
    writer,
    tensorrt,
    bootstrap,
    tracking,
)

# the ids the configs consume themselves: folders, the loop, the optimiser and devices
RUN_RULES: dict[str, Rule] = {
    "bundle_root": described(
        existing_folder, "the bundle's folder (configs, package, models); relative paths start here"
    ),
    "ckpt_dir": described(output_folder, "folder of the weights a run writes and resumes from"),
    "output_dir": described(
        output_folder, "folder of logs, metrics, plots and predictions (by default one per workflow in ``ckpt_dir``)"
    ),
    "output_root": described(output_folder, "folder of the curriculum: one sub-folder per stage and its state"),
    "batch_size": described(integer(1), "images per batch (per process on several GPUs)"),
    "num_workers": described(integer(0), "DataLoader and caching worker processes"),
    "device": described(device, "the torch device of the run"),
    "amp": described(boolean, "mixed precision (autocast) on a CUDA device"),
    "amp_dtype": described(
        choice(AMP_DTYPES), "autocast dtype of ``amp``: bfloat16 keeps float32's range, float16 needs loss scaling"
    ),
    "channels_last": described(
        boolean, "the network's weights in channels-last memory format (cuDNN's NHWC convolutions)"
    ),
    "compile": described(boolean, "``torch.compile`` of the training network (one process on a GPU)"),
    "sync_batch_norm": described(boolean, "batch-norm statistics synchronised across processes (multi-GPU overlays)"),
    "debug": described(boolean, "tracebacks instead of one-line messages when a run stops"),
    "max_epochs": described(integer(1), "training epochs"),
    "val_interval": described(integer(1), "epochs between validations"),
    "learning_rate": described(number(0, 10, lo_open=True), "AdamW learning rate, cosine decay over ``max_epochs``"),
    "weight_decay": described(number(0, 1), "AdamW weight decay"),
    "warmup_epochs": described(integer(0), "epochs of linear learning-rate warm-up before the cosine decay"),
    "key_metric": described(
        choice(["val_auc", "val_accuracy", "val_dice"], lower=False),
        "validation metric that selects the best ``model.pt``",
    ),
}
WORKFLOWS = (
    "train",
    "evaluate",
    "inference",
    "pretrain_contrastive",
    "pretrain_inpainting",
    "pretrain_pretext",
    "curriculum",
)


def _gather_rules() -> dict[str, Rule | None]:
    """Every component's ``RULES`` and ``RUN_RULES`` in one table; an id declared twice is a programming error."""
    rules: dict[str, Rule | None] = dict(RUN_RULES)
    for component in COMPONENTS:
        for name, rule in getattr(component, "RULES", {}).items():
            if name in rules:
                raise RuntimeError(f"setting {name!r} has two rules ({component.__name__} and another)")
            rules[name] = rule
    return rules


def _gather_workflow_rules() -> dict[str, dict[str, Rule]]:
    gathered: dict[str, dict[str, Rule]] = {
        "inference": {"ckpt_dir": described(existing_folder, "folder of the ``model.pt`` inference reads")}
    }
    for component in COMPONENTS:
        for workflow, rules in getattr(component, "WORKFLOW_RULES", {}).items():
            gathered.setdefault(workflow, {}).update(rules)
    return gathered


# ---------------------------------------------------------------------------------------------------------------
# rules over the run's ids


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def amp_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """Mixed precision runs on a GPU, in a dtype the GPU supports."""
    if not is_true(s.get("amp"), "amp"):
        return []
    dev = device_type(s["device"]) if "device" in s else None
    if dev == "cpu" and str(s["device"]) == "cpu":
        return [
            "amp: true needs a CUDA device (mixed precision here is float16 or bfloat16 autocast on the GPU); "
            "device is cpu"
        ]
    dtype = s.get("amp_dtype")
    if dev == "cuda" and isinstance(dtype, str) and dtype.strip().lower() == "bfloat16" and not _bf16_supported():
        return [
            "amp_dtype: 'bfloat16' is not supported by this GPU (torch.cuda.is_bf16_supported() is false); "
            "use float16"
        ]
    return []


def compile_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """``torch.compile`` is used where it has been shown to work: one process on a GPU."""
    if not is_true(s.get("compile"), "compile"):
        return []
    problems = []
    if "sync_batch_norm" in s:  # only the multi-GPU overlays have this id
        problems.append(
            "compile: true is not supported with the multi-GPU overlays (torch.compile of the "
            "DistributedDataParallel network through MONAI's trainer has not been tried); use compile false"
        )
    if "device" in s and device_type(s["device"]) == "cpu":
        # measured with PyTorch 2.13: the CPU compiler fails in the backward of the encoder's padding
        problems.append(
            "compile: true fails on the CPU (PyTorch's CPU compiler cannot build the backward of this network); "
            "use it on a CUDA device, or compile false"
        )
    return problems


def sync_batch_norm_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """PyTorch's SyncBatchNorm runs on GPUs only."""
    if is_true(s.get("sync_batch_norm"), "sync_batch_norm") and str(s.get("device")) == "cpu":
        return ["sync_batch_norm: true needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); device is cpu"]
    return []


RULES: dict[str, Rule | None] = _gather_rules()
WORKFLOW_RULES: dict[str, dict[str, Rule]] = _gather_workflow_rules()
CHECKS: tuple[Check, ...] = (amp_check, compile_check, sync_batch_norm_check) + tuple(
    c for component in COMPONENTS for c in getattr(component, "CHECKS", ())
)


def option(rule: str | Rule) -> Callable[[str], Any]:
    """An argparse ``type`` checking a command-line value with the rule of a setting id (``option("batch_size")``)
    or with a rule (``option(integer(8))``): scripts and configs share one set of rules (``bundle.values.option``).
    """
    if isinstance(rule, str):
        return value_option(RULES[rule], rule)
    return value_option(rule)


def check(settings: Mapping[str, Any], workflow: str) -> dict[str, Any]:
    """Check every setting of a workflow before any work; stop with one message listing every bad one.

    Args:
        settings: id -> resolved value (a config's ``settings``; keys starting with ``_`` are ignored).
        workflow: one of ``WORKFLOWS`` (selects ``WORKFLOW_RULES``).

    Returns:
        ``settings`` as a dict, unchanged, when every rule passes. The ``debug`` id, when present and valid,
        switches ``bundle.errors`` debug mode (tracebacks) for the rest of the run.

    Raises:
        UserError: one line per bad setting: ``<id>: <value> <what is wrong / allowed>``; before them, in a
            ``python -m monai.bundle run`` process, a command line that overrides ids its configs do not define
            (``bundle.overrides.check_command_line``).
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, got {workflow!r}")
    values = {k: v for k, v in dict(settings).items() if not str(k).startswith("_")}
    if boolean(values.get("debug", False)) is None:
        set_debug(as_bool(values.get("debug", False), "debug"))
    # the ids of the command line first: a misspelt one would otherwise be ignored without a word (bundle.overrides)
    overrides.check_command_line()
    rules = {**RULES, **WORKFLOW_RULES.get(workflow, {})}
    if values.get("image_dir"):  # pretraining on a folder of images: the datalist is not read
        rules["datalist"] = None
    problems = []
    for name, value in values.items():
        if name not in rules:
            problems.append(f"{name}: no rule checks this setting (a config error: add it to its component's RULES)")
            continue
        rule = rules[name]
        problem = rule(value) if rule is not None else None
        if problem:
            problems.append(f"{name}: {show(value)} {problem}")
    for rule_over_ids in CHECKS:
        problems += rule_over_ids(values, workflow)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        fail(f"{len(problems)} setting(s) cannot be used, nothing was run:\n{lines}")
    return dict(settings)
