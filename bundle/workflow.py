"""One way to run the bundle's configs: as a command (``python -m monai.bundle run``) or in this process.

The study, the release weights, the curriculum, the benchmarks and the tests all run configs through these
functions, so that a config list, an override and the bundle root reach MONAI's runner the same way whoever
starts it. Configs are named (``"train"`` is ``configs/train.json``) or given as paths (relative ones to the
bundle root); a list of several is merged in order (later files override), as ``--config_file
"['a.json','b.json']"`` does, and runs from any working folder because every path is absolute.
"""

from __future__ import annotations

import gc
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from . import overrides as override_ids
from .distributed import is_main_process
from .tracking import requesting

__all__ = [
    "ROOT",
    "CONFIGS",
    "WORKFLOW_CONFIGS",
    "config_paths",
    "cli_value",
    "command",
    "next_step",
    "run",
    "parser",
    "parsed",
]

ROOT = Path(__file__).resolve().parents[1]  # the bundle root: configs/, bundle/, models/
CONFIGS = ROOT / "configs"
# workflow (as bundle.settings.check names it) -> the configs it runs, as a config list
WORKFLOW_CONFIGS = {
    "train": ["train"],
    "evaluate": ["train", "evaluate"],
    "inference": ["inference"],
    "pretrain_contrastive": ["pretrain_contrastive"],
    "pretrain_inpainting": ["pretrain_inpainting"],
    "pretrain_pretext": ["pretrain_pretext"],
    "curriculum": ["pretrain_curriculum"],
}


def config_paths(configs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Absolute paths of ``configs``: a name (``"train"``), a path (relative to the bundle root), or a list."""
    items = [configs] if isinstance(configs, (str, os.PathLike)) else list(configs)
    paths = []
    for item in items:
        path = Path(item)
        if not path.suffix:  # a config's name
            path = CONFIGS / f"{item}.json"
        paths.append(str(path if path.is_absolute() else ROOT / path))
    return paths


def cli_value(value: Any) -> str:
    """A value as ``monai.bundle run`` (python-fire) reads it back: True/False/None, numbers, JSON lists and
    dicts, text as it is."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def config_arg(paths: Sequence[str]) -> str:
    """``--config_file``'s value for ``paths``: the one path, or a list MONAI's runner reads (``"['a','b']"``)."""
    return paths[0] if len(paths) == 1 else "[" + ",".join(f"'{p}'" for p in paths) + "]"


def command(
    configs: str | os.PathLike | Sequence[str | os.PathLike],
    overrides: Mapping[str, Any] | None = None,
    bundle_root: str | os.PathLike = ROOT,
    python: str = sys.executable,
) -> list[str]:
    """``python -m monai.bundle run --config_file <configs> --bundle_root <root> --<id> <value> ...``; MONAI reads
    ``metadata.json`` and ``logging.conf`` beside the first config."""
    argv = [python, "-m", "monai.bundle", "run", "--config_file", config_arg(config_paths(configs))]
    argv += ["--bundle_root", str(bundle_root)]
    for key, value in (overrides or {}).items():
        argv += [f"--{key}", cli_value(value)]
    return argv


# the data ids a next step repeats when this run's command line set them: the next run then sees the same splits
CARRIED = ("dataset_dir", "datalist", "seed", "val_fraction", "test_fraction", "cache_dir", "bundle_root")


def next_step(what: str, configs: Sequence[str], ids: Mapping[str, Any], carried: Sequence[str] = CARRIED) -> str:
    """The line a finished run prints: what it made and the command of the next step, ready to copy.

    ``configs`` are names (``"train"``) or bundle paths; ``ids`` the next run's values; ``carried`` ids are added
    with this process's command-line values where it set them (``bundle.overrides.command_line``). Config paths
    are relative to the bundle root when the run started there, absolute otherwise. Printed by rank 0 only.
    """
    given = getattr(override_ids.command_line(), "values", {}) or {}
    values = {**{k: given[k] for k in carried if k in given and k not in ids}, **ids}
    paths = config_paths(configs)
    if Path.cwd().resolve() == ROOT:
        paths = [os.path.relpath(p, ROOT) for p in paths]
    argv = ["python", "-m", "monai.bundle", "run", "--config_file", config_arg(paths)]
    for key, value in values.items():
        path = key.endswith(("_dir", "_ckpt")) or key in ("bundle_root", "datalist")
        argv += [f"--{key}", cli_value(os.path.abspath(value) if path and isinstance(value, str) else value)]
    # a config list in double quotes, as the guides write it: shlex would close and reopen single quotes around it
    words = [f'"{a}"' if a.startswith("[") and '"' not in a else shlex.quote(a) for a in argv]
    line = f"{what}:\n  {' '.join(words)}"
    if is_main_process():
        print(line)
    return line


def run(
    configs: str | os.PathLike | Sequence[str | os.PathLike],
    overrides: Mapping[str, Any] | None = None,
    before_run: Callable[[ConfigWorkflow], None] | None = None,
    logging_file: str | bool | None = None,
    meta_file: str | None = None,
    tracking: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``configs`` in this process as ``python -m monai.bundle run`` would: initialise, run, finalise.

    ``before_run(workflow)`` runs between initialise and run (attach a timer, load weights). ``meta_file`` and
    ``logging_file`` default to MONAI's (``metadata.json`` and ``logging.conf`` beside the first config);
    ``logging_file`` False keeps the caller's logging. ``tracking`` is ``--tracking``'s value (``"mlflow"``, a
    settings file or mapping; ``bundle.tracking``). Returns the ids a caller reads after a run (``pretrained_out``,
    ``ckpt_dir``, ``output_dir``) parsed, where the config has them.

    Raises:
        UserError: before the workflow is built, a config file that does not exist or an override of an id the
            configs do not define (``bundle.overrides``: MONAI would add it without a word).
    """
    paths = config_paths(configs)
    override_ids.check(paths, overrides or {})
    overrides = {"bundle_root": str(ROOT), **(overrides or {})}
    workflow = ConfigWorkflow(
        config_file=paths,
        meta_file=meta_file,
        logging_file=logging_file,
        workflow_type="train",
        tracking=tracking,
        **overrides,
    )
    try:
        with requesting(tracking):  # what the workflow's settings check and a curriculum's stages read
            workflow.initialize()
            if before_run is not None:
                before_run(workflow)
            workflow.run()
            ids = [i for i in ("pretrained_out", "ckpt_dir", "output_dir") if i in workflow.parser.config]
            results = {i: workflow.parser.get_parsed_content(i) for i in ids}
            workflow.finalize()
    finally:
        del workflow
        gc.collect()  # the engine holds its DataLoader iterator in reference cycles: release its workers now
    return results


def parser(
    configs: str | os.PathLike | Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None
) -> ConfigParser:
    """A ``ConfigParser`` of ``configs`` with ``overrides`` (the bundle root set), nothing parsed yet; overrides are
    checked as ``run`` checks them.

    Raises:
        UserError: a config file that does not exist or an override of an id the configs do not define.
    """
    paths = config_paths(configs)
    override_ids.check(paths, overrides or {})
    config = ConfigParser()
    config.read_config(paths)
    config.update({"bundle_root": str(ROOT), **(overrides or {})})
    return config


def parsed(
    configs: str | os.PathLike | Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None, *ids: str
) -> list[Any]:
    """The parsed values of ``ids`` of ``configs`` with ``overrides``, without running anything; overrides are
    checked as ``run`` checks them."""
    config = parser(configs, overrides)
    return [config.get_parsed_content(i) for i in ids]
