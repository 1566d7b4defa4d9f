"""The bundle side of a training suite: the config's overrides, its speed ids (and what they do to a plain loop),
a datalist long enough for the timed iterations, and the workflow run with a timer on its trainer.

A config is named as ``bundle.workflow`` names it (``"train"`` is ``configs/train.json``) or given as a path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle import workflow
from bundle.errors import fail
from bundle.values import as_bool, autocast_dtype

from .datapath import measure_data_path
from .timing import IterationTimer, compare_training

__all__ = [
    "SPEED_IDS",
    "config_ids",
    "speed_overrides",
    "SpeedUp",
    "repeat_datalist",
    "dataset_size_needed",
    "workflow_overrides",
    "run_workflow",
    "measure_training",
]

SPEED_IDS = ("channels_last", "compile", "amp_dtype")  # config ids the speed flags set, only when given


def _config_file(config: str | os.PathLike) -> Path:
    return Path(workflow.config_paths(config)[0])


def _shown(config: str | os.PathLike) -> str:
    """``configs/train.json`` for ``"train"``: the config file as a message names it."""
    path = _config_file(config)
    return path.relative_to(workflow.ROOT).as_posix() if path.is_relative_to(workflow.ROOT) else str(path)


def config_ids(config: str | os.PathLike) -> dict[str, Any]:
    """The top-level ids of ``config`` as written (unparsed)."""
    return json.loads(_config_file(config).read_text(encoding="utf-8"))


def speed_overrides(args: argparse.Namespace, config: str | os.PathLike) -> dict[str, Any]:
    """The speed ids given on the command line, as config overrides; the others are left to the config.

    A flag whose id ``config`` does not have stops with one message: the workflow would ignore it while the plain
    loop applied it, and the ratio would compare two different things.
    """
    given = {k: getattr(args, k, None) for k in SPEED_IDS}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return {}
    known = config_ids(config)
    missing = [k for k in given if k not in known]
    if missing:
        flags = ", ".join(f"--{k}" for k in missing)
        fail(f"{flags}: {_shown(config)} has no id {', '.join(missing)}; leave the flag out (the config decides)")
    out: dict[str, Any] = {}
    for k, v in given.items():
        out[k] = str(v).strip().lower() if k == "amp_dtype" else as_bool(v, k)
    return out


class SpeedUp:
    """What the speed ids do, for a plain loop: channels_last memory format, torch.compile, the autocast dtype.

    ``from_config`` reads the values the workflow runs with (the config's, or the flags'), so that both sides run
    alike; an id the config lacks keeps PyTorch's default (contiguous tensors, eager mode, float16 autocast).
    """

    def __init__(self, channels_last: bool = False, compile: bool = False, amp_dtype: Any = None) -> None:
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        self.amp_dtype = autocast_dtype(amp_dtype) if amp_dtype else None

    @classmethod
    def from_config(cls, config: str | os.PathLike, overrides: Mapping[str, Any]) -> SpeedUp:
        """The speed ids of ``config`` with ``overrides``, as the workflow resolves them."""
        ids = [k for k in SPEED_IDS if k in config_ids(config)]
        values = dict(zip(ids, workflow.parsed(config, overrides, *ids))) if ids else {}
        return cls(
            channels_last=as_bool(values.get("channels_last", False), "channels_last"),
            compile=as_bool(values.get("compile", False), "compile"),
            amp_dtype=values.get("amp_dtype"),
        )

    def as_settings(self) -> dict[str, Any]:
        """The speed settings of a report (only those that differ from PyTorch's defaults)."""
        out: dict[str, Any] = {}
        if self.channels_last:
            out["channels_last"] = True
        if self.compile:
            out["compile"] = True
        if self.amp_dtype is not None:
            out["amp_dtype"] = str(self.amp_dtype).replace("torch.", "")
        return out

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in the memory format (and compiled) as asked; returns the module to call."""
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return torch.compile(module) if self.compile else module

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch (N, C, H, W) in the memory format asked."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


def _read_datalist(dataset_dir: Path) -> dict[str, Any]:
    """``dataset_dir/datalist.json`` as a mapping, or one message naming --dataset_dir and what is wrong."""
    path = dataset_dir / "datalist.json"
    if not dataset_dir.is_dir():
        fail(f"--dataset_dir {dataset_dir} is not a folder; give a folder with datalist.json")
    if not path.is_file():
        fail(f"--dataset_dir {dataset_dir} has no datalist.json (scripts/prepare_dataset.py writes one)")
    try:
        source = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"--dataset_dir: {path} is not readable JSON ({e})", e)
    if not isinstance(source, dict):
        fail(f"--dataset_dir: {path} must hold a JSON object with a 'training' list, got {type(source).__name__}")
    return source


def repeat_datalist(dataset_dir: str | os.PathLike, n_images: int, out: str | os.PathLike) -> tuple[str, list[dict]]:
    """Write a datalist of at least ``n_images`` training entries (the dataset's images, repeated) under ``out``.

    Every section of ``dataset_dir/datalist.json`` trains, with absolute image and mask paths; repeats become
    separate patients, so two-image (MICLe) pairs keep their meaning. Returns the path and the entries.
    """
    dataset_dir = Path(dataset_dir).resolve()
    source = _read_datalist(dataset_dir)
    sections = [source[s] for s in ("training", "validation", "test") if isinstance(source.get(s), list)]
    entries = [e for section in sections for e in section if isinstance(e, dict)]
    if not entries:
        fail(f"--dataset_dir: {dataset_dir / 'datalist.json'} has no entries in training, validation or test")
    rows = []
    for k in range(-(-n_images // len(entries))):
        for e in entries:
            row = dict(e)
            for key in ("image", "mask"):
                if row.get(key):
                    row[key] = str(dataset_dir / row[key])
            if row.get("patient"):
                row["patient"] = f"{row['patient']}#{k}"
            rows.append(row)
    path = Path(out) / "bench_datalist.json"
    path.write_text(json.dumps({"training": rows, "validation": [], "test": []}))
    return str(path), rows


def dataset_size_needed(args: argparse.Namespace) -> int:
    """Images a workflow needs so that warm-up + timed iterations fit in one epoch, with one batch to spare."""
    return args.batch_size * (args.warmup + args.iters + 1)


def workflow_overrides(args: argparse.Namespace, device: torch.device, out: str, datalist: str) -> dict[str, Any]:
    """Config ids every training suite sets: sizes, device, precision, data, and no validation, probe or resume."""
    return {
        "dataset_dir": str(Path(args.dataset_dir).resolve()),
        "datalist": datalist,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "backbone": args.backbone,
        "device": device,
        "amp": device.type == "cuda",
        "max_epochs": 1,
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "resume": False,
        "ckpt_dir": f"{out}/models",
        "output_dir": f"{out}/eval",
    }


def run_workflow(
    config: str | os.PathLike | Sequence[str | os.PathLike], overrides: Mapping[str, Any], timer: IterationTimer
) -> IterationTimer:
    """Run ``config`` as MONAI's ``ConfigWorkflow`` until ``timer`` (on ``train#trainer``) stops it.

    The workflow is built from the config file with ``overrides``, initialised, run and finalised exactly as
    ``python -m monai.bundle run`` would (with the bundle's logging config); only the timer is added.
    """
    # the trainer parsed here is the same instance the run runs
    workflow.run(config, overrides, lambda wf: timer.attach(wf.parser.get_parsed_content("train#trainer")))
    timer.check()
    return timer


def measure_training(
    config: str,
    overrides: Mapping[str, Any],
    items: Callable[[Any], int],
    plain: Callable[[], IterationTimer],
    device: torch.device,
    args: argparse.Namespace,
    loader_alone: bool = False,
) -> dict[str, Any]:
    """One training suite's three measurements (``compare_training``): the data path of ``config`` alone, the
    ``plain`` loop and the workflow with ``overrides``, each counting ``items`` per batch over ``args.warmup``
    and ``args.iters`` iterations. ``loader_alone``: also the loader without ``prepare_batch`` (pretraining, whose
    views or masks ``prepare_batch`` makes on the device)."""
    warmup, iters = args.warmup, args.iters
    return compare_training(
        lambda: run_workflow(config, overrides, IterationTimer(device, warmup, iters, items)),
        plain,
        device,
        data=lambda: measure_data_path(config, overrides, items, device, warmup, iters, loader_alone=loader_alone),
    )
