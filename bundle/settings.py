"""Config settings: one parser for every boolean id, and a check of every setting before any work.

``python -m monai.bundle run --resume false`` passes the STRING ``"false"``, which Python reads as true; every
boolean id of the bundle goes through ``as_bool`` so that all of them accept the same spellings.

``check`` is the first step of every config's ``run`` (not ``initialize``: ``monai.bundle.load`` initialises a
workflow only to build its network, from folders where the data need not exist): it is given the config's ``settings`` (a mapping of
id to resolved value) and stops the run with one message listing every bad setting, its value and what is
allowed, before a dataset is cached or a network built. Each id has one rule (``RULES``), whichever config it
appears in; the few ids whose allowed values depend on the workflow (``ssl_method``) are in ``WORKFLOW_RULES``,
and rules over several ids (an image size the backbone cannot halve five times, multi-label with one class)
are in ``_combinations``. tests/configs keeps each config's ``settings`` complete.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import fail, set_debug

__all__ = [
    "as_bool",
    "autocast_dtype",
    "check",
    "option",
    "RULES",
    "WORKFLOW_RULES",
    "WORKFLOWS",
    "ENCODER_STRIDE",
    "AMP_DTYPES",
]

_TRUE = ("true", "1", "yes", "y", "on", "t")
_FALSE = ("false", "0", "no", "n", "off", "f", "none", "")

# the autocast dtypes of ``amp`` (``amp_dtype``): bfloat16 keeps float32's range, float16 needs the loss scaling
AMP_DTYPES = ("bfloat16", "float16")

# FlexibleUNet's encoders halve the image five times and its decoder concatenates skip connections of matching size
ENCODER_STRIDE = 32

Rule = Callable[[Any], "str | None"]  # a problem ("must be ...") or None


def as_bool(value: Any, name: str) -> bool:
    """``value`` as a bool: ``True``/``False``, ``1``/``0``, or a string users type for them (any case):
    true/false, yes/no, on/off, y/n, t/f, 1/0 (``none`` and an empty string are false).

    Raises:
        ValueError: anything else, naming the id ``name``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false (or yes/no, on/off, 1/0), got {value!r}")


def autocast_dtype(value: Any) -> Any:
    """The ``torch.dtype`` named by ``amp_dtype`` (``bfloat16`` or ``float16``, any case), for MONAI's engines'
    ``amp_kwargs``.

    Raises:
        ValueError: any other value.
    """
    import torch

    name = value.strip().lower() if isinstance(value, str) else value
    if name not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {value!r}")
    return getattr(torch, name)


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


# ---------------------------------------------------------------------------------------------------------------
# rules for one value


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    """An integer in [lo, hi] (either bound may be None)."""
    allowed = "an integer" + (f" >= {lo}" if hi is None and lo is not None else "")
    allowed += f" in [{lo}, {hi}]" if lo is not None and hi is not None else ""

    def rule(v: Any) -> str | None:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"must be {allowed}"
        return None

    return rule


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A finite number between ``lo`` and ``hi`` (bounds closed unless ``*_open``)."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    if lo is not None and hi is not None:
        allowed = f"a number in {left}{lo}, {hi}{right}"
    elif lo is not None:
        allowed = f"a number {'>' if lo_open else '>='} {lo}"
    else:
        allowed = "a finite number"

    def rule(v: Any) -> str | None:
        if not _is_number(v) or not math.isfinite(float(v)):
            return f"must be {allowed}"
        x = float(v)
        if lo is not None and (x < lo or (lo_open and x == lo)):
            return f"must be {allowed}"
        if hi is not None and (x > hi or (hi_open and x == hi)):
            return f"must be {allowed}"
        return None

    return rule


def choice(options: Sequence[str] | Callable[[], Sequence[str]], lower: bool = True) -> Rule:
    """One of ``options`` (a list, or a function returning it, for registries imported only when needed)."""

    def rule(v: Any) -> str | None:
        known = list(options() if callable(options) else options)
        key = v.lower() if lower and isinstance(v, str) else v
        return None if key in known else f"must be one of {', '.join(map(str, known))}"

    return rule


def optional(inner: Rule) -> Rule:
    """None (null), or a value ``inner`` accepts."""

    def rule(v: Any) -> str | None:
        problem = None if v is None else inner(v)
        return None if problem is None else f"{problem}, or null"

    return rule


def number_or_range(inner: Rule, ordered: bool = True) -> Rule:
    """One value, or a [min, max] pair of values, that ``inner`` accepts (``min <= max``)."""

    def rule(v: Any) -> str | None:
        values = list(v) if isinstance(v, (list, tuple)) else [v]
        if len(values) not in (1, 2) or any(inner(x) for x in values):
            return f"{next((inner(x) for x in values if inner(x)), 'must be one value')} (one value or [min, max])"
        if ordered and len(values) == 2 and values[0] > values[1]:
            return "must be [min, max] with min <= max"
        return None

    return rule


def boolean(v: Any) -> str | None:
    try:
        as_bool(v, "")
    except ValueError:
        return "must be true or false (or yes/no, on/off, 1/0)"
    return None


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty text"


def class_names(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(n, str) and n.strip() for n in v):
        return "must be a non-empty list of class names"
    if len(set(v)) != len(v):
        return "must not name a class twice"
    return None


def _not_a_path(v: Any) -> bool:
    return not isinstance(v, (str, os.PathLike)) or not str(v)


def existing_folder(v: Any) -> str | None:
    if _not_a_path(v):
        return "must be the path of a folder"
    return None if os.path.isdir(v) else "no such folder"


def existing_file(v: Any) -> str | None:
    if _not_a_path(v):
        return "must be the path of a file"
    if os.path.isdir(v):
        return "is a folder, not a file"
    if not os.path.isfile(v):
        return "no such file"
    return None if os.access(v, os.R_OK) else "cannot be read (permission denied)"


def folder_or_file(v: Any) -> str | None:
    if _not_a_path(v):
        return "must be the path of a folder or a file"
    return None if os.path.exists(v) else "no such folder or file"


def output_folder(v: Any) -> str | None:
    """A folder the run can write: an existing writable folder, or one that can be created (nothing is created).

    Also the scripts' check of their output options (prepare_dataset, benchmark, study)."""
    if _not_a_path(v):
        return "must be the path of a folder"
    path = os.path.abspath(v)
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder"
    while not os.path.exists(path):  # the nearest existing parent decides whether the folder can be created
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"cannot be created: {path} is a file"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"is not writable ({path}: permission denied)"
    return None


def device(v: Any) -> str | None:
    import torch

    try:
        dev = torch.device(v)
    except (RuntimeError, TypeError):
        return "must be a torch device such as cpu, cuda or cuda:1"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "asks for CUDA, but no CUDA device is available; use cpu"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"names CUDA device {dev.index}, but only {torch.cuda.device_count()} are visible"
    elif dev.type != "cpu" and not (dev.type == "mps" and torch.backends.mps.is_available()):
        return f"device type {dev.type!r} is not available here; use cpu or cuda"
    return None


def image_size(v: Any) -> str | None:
    """An integer >= 32 and a multiple of 32: FlexibleUNet's encoders halve the image five times and its decoder
    concatenates skip connections of matching size."""
    if not _is_int(v) or v < ENCODER_STRIDE:
        return f"must be an integer >= {ENCODER_STRIDE} and a multiple of {ENCODER_STRIDE}"
    if v % ENCODER_STRIDE:
        lo = v // ENCODER_STRIDE * ENCODER_STRIDE
        return (
            f"cannot be halved five times by the encoder and decoder; use a multiple of {ENCODER_STRIDE} "
            f"(e.g. {lo} or {lo + ENCODER_STRIDE})"
        )
    return None


def _backbones() -> list[str]:
    from .networks.multitask import backbones

    return backbones()


def _saliency_methods() -> Sequence[str]:
    from .saliency import SALIENCY_METHODS

    return SALIENCY_METHODS


def _methods(kind: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        from .ssl import methods

        return list({"contrastive": methods.METHODS, "pretext": methods.PRETEXT_METHODS}.get(kind, {})) or list(
            methods.INPAINTING_METHODS
        )

    return names


fraction = number(0, 1)
probability = number(0, 1)
positive = number(0, lo_open=True)
non_negative = number(0)

RULES: dict[str, Rule] = {
    # data and folders
    "bundle_root": existing_folder,
    "dataset_dir": existing_folder,
    "datalist": optional(existing_file),
    "image_dir": optional(existing_folder),
    "ckpt_dir": output_folder,
    "output_dir": output_folder,
    "output_root": output_folder,
    "pretrained_ckpt": optional(existing_file),
    "freeze_encoder": boolean,
    "ckpt_file": existing_file,
    "class_names": class_names,
    "multi_label": boolean,
    "recursive": boolean,
    "max_images": optional(integer(1)),
    # network and input
    "backbone": choice(_backbones),
    "image_size": image_size,
    "lungs_only": boolean,
    "vit_pool": choice(["mean", "token"]),  # bundle.networks.vit.VIT_POOLS
    # data loading
    "batch_size": integer(1),
    "num_workers": integer(0),
    "cache_rate": fraction,
    "cache": choice(["memory", "disk", "none"]),  # bundle.data.cache.CACHE_KINDS
    "cache_dtype": choice(["uint8", "uint16", "float32"]),  # bundle.data.precision.CACHE_DTYPES
    "cache_dir": output_folder,
    "seed": integer(0, 2**32 - 1),
    "val_fraction": number(0, 1, hi_open=True),
    "test_fraction": number(0, 1, hi_open=True),
    "label_fraction": number(0, 1, lo_open=True),
    # run
    "device": device,
    "amp": boolean,
    "amp_dtype": choice(AMP_DTYPES),
    "channels_last": boolean,
    "compile": boolean,
    "sync_batch_norm": boolean,
    "show_progress": boolean,
    "resume": boolean,
    "debug": boolean,
    "max_epochs": integer(1),
    "val_interval": integer(1),
    "learning_rate": number(0, 10, lo_open=True),
    "weight_decay": number(0, 1),
    "warmup_epochs": integer(0),
    "w_cls": non_negative,
    "w_seg": non_negative,
    "key_metric": choice(["val_auc", "val_accuracy", "val_dice"], lower=False),
    # pretraining
    "multi_instance": boolean,
    "temperature": number(0, 10, lo_open=True),
    "queue_size": integer(1),
    "momentum": fraction,
    "proj_dim": optional(integer(1)),
    "hidden_dim": optional(integer(1)),
    "pred_hidden_dim": optional(integer(1)),
    "probe_interval": integer(0),
    "collapse_ratio": fraction,
    "crop_min_scale": number(0, 1, lo_open=True),
    "hflip_prob": probability,
    "affine_prob": probability,
    "rotate_range": number(0, math.pi),
    "scale_range": number(0, 1, hi_open=True),
    "contrast_prob": probability,
    "gamma_range": number_or_range(positive),
    "hist_shift_prob": probability,
    "hist_shift_points": number_or_range(integer(3)),
    "blur_prob": probability,
    "blur_sigma": number_or_range(non_negative),
    "noise_prob": probability,
    "noise_std": non_negative,
    "views_on": choice(["device", "workers"]),
    "recon_loss": choice(["l1", "l2"]),
    "mask_ratio": number_or_range(number(0, 1, lo_open=True, hi_open=True)),
    "holes": optional(number_or_range(integer(1))),
    "hole_size": optional(number_or_range(number(0, 1, lo_open=True))),
    "mask_patch_size": integer(1),
    "replace_prob": probability,
    "contrastive_weight": non_negative,
    "sample_interval": integer(0),
    "sample_images": integer(0),
    "num_permutations": integer(2, 1000),
    "tile_fraction": number(0, 1, lo_open=True),
    "carry_forward": boolean,
    # inference and evaluation
    "saliency": choice(_saliency_methods),
    "saliency_layer": optional(text),
    "saliency_class": None,  # an index or a class name: checked with class_names in _combinations
    "occlusion_mask_size": optional(integer(1)),
    "occlusion_overlap": number(0, 1, hi_open=True),
    "write_masks": boolean,
    "write_saliency": boolean,
    "write_overlays": boolean,
    "n_overlays": integer(0),
}

# ids whose allowed values depend on the workflow, and ids that differ from RULES there
WORKFLOW_RULES: dict[str, dict[str, Rule]] = {
    "pretrain_contrastive": {"ssl_method": choice(_methods("contrastive"))},
    "pretrain_inpainting": {"ssl_method": choice(_methods("inpainting"))},
    "pretrain_pretext": {"ssl_method": choice(_methods("pretext"))},
    "inference": {"dataset_dir": folder_or_file, "ckpt_dir": existing_folder},
    "curriculum": {"max_epochs": optional(integer(1))},
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


def _device_type(v: Any) -> str:
    """``cpu``, ``cuda``, ... of a device or its name (one ``device`` accepts)."""
    import torch

    return torch.device(v).type


def _show(value: Any) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= 80 else text_[:77] + "..."


# ---------------------------------------------------------------------------------------------------------------
# rules over several ids


def _saliency_layer_problem(layer: Any, backbone: str, vit_pool: str = "mean") -> str | None:
    """Grad-CAM explains encoder layers (one, or several joined by ``+`` / ``*``): the classifier reads the encoder."""
    from types import SimpleNamespace

    from .networks.multitask import build_encoder
    from .saliency import default_target_layer, parse_target_layers

    try:
        names, _ = parse_target_layers(layer)
    except ValueError as e:
        return str(e).replace(f"saliency_layer {layer!r} ", "")
    encoder = build_encoder(backbone, vit_pool=vit_pool)  # a second or less, and only when a layer is named
    modules = {f"encoder.{n}" for n, _ in encoder.named_modules() if n}
    unknown = [n for n in names if n not in modules]
    if not unknown:
        return None
    default = default_target_layer(SimpleNamespace(encoder=encoder))
    which = "is not a module" if len(names) == 1 else f"names {', '.join(unknown)}, not modules"
    return f"{which} of the {backbone} encoder (the default, when saliency_layer is null, is {default})"


def _combinations(s: Mapping[str, Any], workflow: str) -> list[str]:
    problems = []
    multi = s.get("multi_label")
    multi = as_bool(multi, "multi_label") if boolean(multi) is None else False
    names = s.get("class_names")
    names_ok = "class_names" in s and class_names(names) is None
    if names_ok and len(names) < 2 and not multi:
        problems.append(
            f"class_names: {_show(names)} has one class; single-label classification needs at least two "
            "(or set multi_label true for one yes/no finding)"
        )
    size = s.get("image_size")
    backbone_ok = "backbone" in s and RULES["backbone"](s["backbone"]) is None
    amp, dev = s.get("amp"), s.get("device")
    amp_on = boolean(amp) is None and as_bool(amp, "amp")
    if amp_on and "device" in s and device(dev) is None and str(dev) == "cpu":
        problems.append(
            "amp: true needs a CUDA device (mixed precision here is float16 or bfloat16 autocast on the GPU); "
            "device is cpu"
        )
    dtype = s.get("amp_dtype")
    cuda = "device" in s and device(dev) is None and _device_type(dev) == "cuda"
    if amp_on and cuda and isinstance(dtype, str) and dtype.strip().lower() == "bfloat16" and not _bf16_supported():
        problems.append(
            "amp_dtype: 'bfloat16' is not supported by this GPU (torch.cuda.is_bf16_supported() is false); "
            "use float16"
        )
    compile_ = s.get("compile")
    if boolean(compile_) is None and as_bool(compile_, "compile") and "sync_batch_norm" in s:
        problems.append(
            "compile: true is not supported with the multi-GPU overlays (torch.compile of the "
            "DistributedDataParallel network through MONAI's trainer has not been tried); use compile false"
        )
    on_cpu = "device" in s and device(dev) is None and _device_type(dev) == "cpu"
    if boolean(compile_) is None and as_bool(compile_, "compile") and on_cpu:
        # measured with PyTorch 2.13: the CPU compiler fails in the backward of the encoder's padding
        problems.append(
            "compile: true fails on the CPU (PyTorch's CPU compiler cannot build the backward of this network); "
            "use it on a CUDA device, or compile false"
        )
    sync = s.get("sync_batch_norm")
    if boolean(sync) is None and as_bool(sync, "sync_batch_norm") and "device" in s and str(dev) == "cpu":
        problems.append(
            "sync_batch_norm: true needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); device is cpu"
        )
    val, test = s.get("val_fraction"), s.get("test_fraction")
    if _is_number(val) and _is_number(test) and 0 <= val < 1 and 0 <= test < 1 and val + test >= 1:
        problems.append(f"val_fraction + test_fraction: {val} + {test} leaves no image for training; keep it below 1")
    if _is_number(s.get("w_cls")) and _is_number(s.get("w_seg")) and s["w_cls"] == 0 and s["w_seg"] == 0:
        problems.append("w_cls and w_seg: both 0 leaves nothing to learn; give one of them a positive weight")
    cls = s.get("saliency_class")
    if "saliency_class" in s and cls is not None:
        if isinstance(cls, str) and names_ok and cls not in names:
            problems.append(f"saliency_class: {_show(cls)} is not one of the class names {list(names)}")
        elif _is_int(cls) and names_ok and not 0 <= cls < len(names):
            problems.append(f"saliency_class: {cls} is not a class index in [0, {len(names) - 1}]")
        elif not isinstance(cls, str) and not _is_int(cls):
            problems.append(f"saliency_class: {_show(cls)} must be a class name, a class index, or null")
    layer = s.get("saliency_layer")
    if isinstance(layer, str) and layer.strip() and backbone_ok:
        pool = s.get("vit_pool", "mean")
        problem = _saliency_layer_problem(layer, s["backbone"], pool if RULES["vit_pool"](pool) is None else "mean")
        if problem:
            problems.append(f"saliency_layer: {_show(layer)} {problem}")
    mask = s.get("occlusion_mask_size")
    if _is_int(mask) and _is_int(size) and mask > size:
        problems.append(f"occlusion_mask_size: {mask} is larger than image_size {size}")
    if workflow == "pretrain_contrastive" and _is_int(s.get("queue_size")) and _is_int(s.get("batch_size")):
        if str(s.get("ssl_method", "")).lower() == "moco" and s["queue_size"] < s["batch_size"]:
            problems.append(
                f"queue_size: {s['queue_size']} is smaller than batch_size {s['batch_size']}; MoCo's queue holds "
                "at least one batch of keys"
            )
    return problems


def _parse_text(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def option(rule: str | Rule) -> Callable[[str], Any]:
    """An argparse ``type`` checking a command-line value with a rule, so that scripts and configs share them.

    ``rule`` is a setting id of ``RULES`` (``option("batch_size")``) or a rule (``option(integer(8))``). The text
    is read as an integer, else a number, else kept as text; a value the rule refuses stops argparse with
    ``argument --<flag>: <value> <what is allowed>`` (exit status 2) before any work.
    """
    checker = RULES[rule] if isinstance(rule, str) else rule

    def parse(text: str) -> Any:
        value = _parse_text(text)
        problem = checker(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{_show(value)} {problem}")
        return value

    parse.__name__ = rule if isinstance(rule, str) else "value"  # argparse names the type in some messages
    return parse


def check(settings: Mapping[str, Any], workflow: str) -> dict[str, Any]:
    """Check every setting of a workflow before any work; stop with one message listing every bad one.

    Args:
        settings: id -> resolved value (a config's ``settings``; keys starting with ``_`` are ignored).
        workflow: one of ``WORKFLOWS`` (selects ``WORKFLOW_RULES``).

    Returns:
        ``settings`` as a dict, unchanged, when every rule passes. The ``debug`` id, when present and valid,
        switches ``bundle.errors`` debug mode (tracebacks) for the rest of the run.

    Raises:
        UserError: one line per bad setting: ``<id>: <value> <what is wrong / allowed>``.
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, got {workflow!r}")
    values = {k: v for k, v in dict(settings).items() if not str(k).startswith("_")}
    if boolean(values.get("debug", False)) is None:
        set_debug(as_bool(values.get("debug", False), "debug"))
    rules = {**RULES, **WORKFLOW_RULES.get(workflow, {})}
    if values.get("image_dir"):  # pretraining on a folder of images: the datalist is not read
        rules["datalist"] = None
    problems = []
    for name, value in values.items():
        if name not in rules:
            problems.append(f"{name}: no rule checks this setting (a config error: add it to bundle.settings.RULES)")
            continue
        rule = rules[name]
        problem = rule(value) if rule is not None else None
        if problem:
            problems.append(f"{name}: {_show(value)} {problem}")
    problems += _combinations(values, workflow)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        fail(f"{len(problems)} setting(s) cannot be used, nothing was run:\n{lines}")
    return dict(settings)
