"""Overrides: every id a run is given must be one its configs define, checked before any work.

MONAI adds an id it does not know to the config without a word, so ``--saliancy none`` would run with Grad-CAM++
and ``--max_epoch 2`` for the configured epochs. Ids reach a config two ways, and each is checked where it enters:

- ``python -m monai.bundle run``: python-fire parses the command line and MONAI builds the workflow, overrides
  merged in, before any bundle code runs. So ``bundle.settings.check``, the first step of every config's ``run``,
  calls ``check_command_line``: it reads this process's command line (``--args_file`` included) and the config
  files it names from disk, since the built config can no longer tell an override from a config's own id. A
  workflow this process runs later (a curriculum stage) reads the same command line, already checked.
- in this process (``bundle.workflow.run``: the study, the curriculum's stages, the benchmarks, the tests):
  ``check`` runs before the workflow is built.

An id is known when the configs define it, nested ids (``train#trainer#max_epochs``) included, whether or not it
is in their ``settings`` map. MONAI's merge prefix ``+`` is ignored, ``::`` is read as ``#``; ids under ``_``
(``_meta_``, a component's ``_disabled_``) and MONAI's runner arguments (``config_file``, ``run_id``, ...) are not
checked. New keys are accepted only in the mappings the bundle checks itself (a curriculum stage's ``overrides``).
Ids removed from the bundle (``REMOVED``) are named with what replaced them. ``%`` and ``@`` start values, never
ids, and values are left to ``bundle.settings``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import fail

__all__ = [
    "REMOVED",
    "CommandLine",
    "runner_args",
    "config_ids",
    "unknown",
    "problem",
    "check",
    "missing_config",
    "command_line",
    "command_line_problem",
    "check_command_line",
    "tracking_problem",
]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# ids of earlier versions, with what replaced them
REMOVED: dict[str, str] = {
    "views_on": "it was removed in 0.9.2: the views are always made batched on the training device; leave it out",
    "masking": "it was removed in 0.9.2: the masks are made batched on the training device by train#views "
    "(set mask_ratio, holes, hole_size, mask_patch_size)",
}
# mappings whose new keys a run may add, because the bundle checks those keys itself (bundle.ssl.curriculum)
OPEN = re.compile(r"stages#\d+#overrides")
COMMANDS = ("run", "run_workflow")  # the commands of `python -m monai.bundle` that run a config


def runner_args() -> frozenset[str]:
    """The arguments of MONAI's runner, not config ids: those of ``monai.bundle run`` and ``run_workflow``, of
    ``create_workflow`` and of ``ConfigWorkflow``, read from the installed MONAI so that a new one passes."""
    from monai.bundle import ConfigWorkflow, scripts

    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    functions = (scripts.run, scripts.run_workflow, scripts.create_workflow, ConfigWorkflow.__init__)
    names = {p.name for f in functions for p in inspect.signature(f).parameters.values() if p.kind in kinds}
    return frozenset(names - {"self"})


def config_ids(config: Any, prefix: str = "") -> set[str]:
    """Every id of a config: its keys and the nested ones, joined with ``#`` (list items by their index)."""
    if isinstance(config, Mapping):
        items: Iterable[tuple[Any, Any]] = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return set()
    ids: set[str] = set()
    for key, value in items:
        ids.add(f"{prefix}{key}")
        ids |= config_ids(value, f"{prefix}{key}#")
    return ids


def _known(name: str, ids: Collection[str]) -> bool:
    if name in ids or name.startswith("_"):
        return True
    parent, _, leaf = name.rpartition("#")
    # a component may take MONAI's own keys (_disabled_, _requires_); an open mapping takes any key
    return bool(parent) and parent in ids and (leaf.startswith("_") or OPEN.fullmatch(parent) is not None)


def _hint(name: str, ids: Collection[str]) -> str:
    if name in REMOVED:
        return REMOVED[name]
    parent, sep, leaf = name.rpartition("#")
    if parent in ids:  # the closest keys beside it
        keys = sorted(i.rpartition("#")[2] for i in ids if i.rpartition("#")[0] == parent)
        close = [f"{parent}{sep}{k}" for k in difflib.get_close_matches(leaf, keys, n=3) if not k.startswith("_")]
    else:
        depth = name.count("#")
        same_depth = sorted(i for i in ids if i.count("#") == depth and "#_" not in i and not i.startswith("_"))
        close = difflib.get_close_matches(name, same_depth, n=3)
    if not close:
        return f"no key of {parent} is close" if parent in ids else "docs/settings.md lists the settings"
    return f"did you mean {close[0]}?" if len(close) == 1 else f"did you mean {', '.join(close[:-1])} or {close[-1]}?"


def unknown(config: Mapping[str, Any], names: Iterable[str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The ids of ``names`` that ``config`` (or ``extra``) does not define, each with the closest known ids or what
    replaced it."""
    ids = config_ids(config) | set(extra)
    found = {}
    for given in names:
        name = str(given).lstrip("+").replace("::", "#")
        if not _known(name, ids):
            found[str(given)] = _hint(name, ids)
    return found


def _shown(path: str | os.PathLike) -> str:
    """``path`` relative to the working folder when it is inside it (``configs/train.json``)."""
    relative = os.path.relpath(os.path.abspath(path))
    return str(path) if relative.startswith("..") else relative


def missing_config(path: str | os.PathLike, flag: str = "--config_file ") -> str:
    """One sentence: ``path`` does not exist, and which configs the bundle has."""
    configs = [_shown(p) for p in sorted(CONFIGS.glob("*.json")) if p.name != "metadata.json"]
    close = difflib.get_close_matches(_shown(path), configs, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{flag}{path}: no such config file{hint}; the bundle's configs are {', '.join(configs)}"


def problem(
    config_files: Sequence[str | os.PathLike],
    names: Iterable[str],
    flag: str = "",
    extra: Iterable[str] = (),
    shown: str | None = None,
) -> str | None:
    """What stops ``config_files`` run with the override ids ``names``, in one message: a missing or unreadable
    config file, or the ids the configs do not define (each with the closest known ids); None when nothing does.

    ``flag`` goes before each id in the message (``--`` for a command line); ``extra`` are ids known besides the
    configs'; ``shown`` names the configs in the message (default: their paths, ``+`` between them).
    """
    from monai.bundle import ConfigParser

    for path in config_files:
        if not os.path.isfile(path):
            return missing_config(path, flag and "--config_file ")
    shown = shown or " + ".join(_shown(p) for p in config_files)
    try:
        config = ConfigParser.load_config_files([str(p) for p in config_files])
    except Exception as e:  # json and yaml raise their own types for a broken file
        return f"{shown}: cannot read this config ({type(e).__name__}: {e})"
    found = unknown(config, names, extra)
    if not found:
        return None
    if len(found) == 1:
        ((name, hint),) = found.items()
        kind = "id" if "#" in name or "::" in name else "setting"
        return f"{flag}{name}: no such {kind} in {shown}; {hint}"
    lines = "\n".join(f"  - {flag}{name}: {hint}" for name, hint in found.items())
    return f"{len(found)} ids given are not defined by {shown}, nothing was run:\n{lines}"


def check(config_files: Sequence[str | os.PathLike], names: Iterable[str], **kwargs: Any) -> None:
    """Stop with ``problem``'s message (``bundle.errors.fail``) when there is one; ``kwargs`` go to ``problem``."""
    message = problem(config_files, names, **kwargs)
    if message:
        fail(message)


@dataclass
class CommandLine:
    """What a ``python -m monai.bundle run`` command line gives MONAI: the config files, the ids it overrides
    (``--args_file``'s included), the ids the tracking settings add, and every argument's value."""

    config_files: list[str]
    ids: list[str]
    extra: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    missing: str | None = (
        None  # a file named on the command line that does not exist, or a --tracking MONAI cannot read
    )


def _is_flag(arg: str) -> bool:
    return arg.startswith("--") or re.match(r"-[a-zA-Z]", arg) is not None


def _fire_args(args: Sequence[str], named: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """The keyword and positional arguments python-fire reads from ``args`` for a function with ``**kwargs`` whose
    parameters are ``named`` (as ``fire.core._ParseKeywordArgs``): ``--id value``, ``--id=value``, ``--flag`` alone
    (True; ``--noflag``: flag False), ``-`` in a key read as ``_``; the arguments after a lone ``--`` are fire's."""
    args = list(args)
    if "--" in args:
        args = args[: len(args) - 1 - args[::-1].index("--")]
    kwargs: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg, i = args[i], i + 1
        if not _is_flag(arg):
            positional.append(arg)
            continue
        key, equals, value = arg.lstrip("-").partition("=")
        key = key.replace("-", "_")
        if not equals and (i == len(args) or _is_flag(args[i])):
            key, value = (key[2:], "False") if key.startswith("no") and key not in named else (key, "True")
        elif not equals:
            value, i = args[i], i + 1
        kwargs[key] = value
    return kwargs, positional


def _given(command: str, args: Sequence[str]) -> dict[str, Any]:
    """The arguments of ``monai.bundle <command>``, by name, with their values as python-fire parses them."""
    from fire.parser import DefaultParseValue
    from monai.bundle import scripts

    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
    params = [p.name for p in inspect.signature(getattr(scripts, command)).parameters.values() if p.kind in kinds]
    kwargs, positional = _fire_args(args, params)
    given = {**kwargs, **dict(zip([p for p in params if p not in kwargs], positional))}
    return {k: DefaultParseValue(v) for k, v in given.items()}


def tracking_problem(tracking: Any) -> str | None:
    """What is wrong with a ``--tracking`` value MONAI cannot read (neither one of its trackers nor a settings
    file, or files, split by commas as MONAI splits them); None when nothing is."""
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if (
        not tracking
        or isinstance(tracking, Mapping)
        or (isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS)
    ):
        return None
    if all(os.path.isfile(part) for part in str(tracking).split(",")):
        return None
    close = difflib.get_close_matches(str(tracking), list(DEFAULT_EXP_MGMT_SETTINGS), n=1)
    hint = f"; did you mean --tracking {close[0]}?" if close else ""
    known = ", ".join(DEFAULT_EXP_MGMT_SETTINGS)
    return f"--tracking {tracking}: neither a tracker MONAI knows ({known}) nor a tracking settings file{hint}"


def _tracking_ids(tracking: Any) -> list[str]:
    """The ids MONAI's tracking settings add to the config (``--tracking mlflow``: ``experiment_name``, ...)."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if not tracking or tracking_problem(tracking):
        return []
    settings = DEFAULT_EXP_MGMT_SETTINGS.get(tracking) if isinstance(tracking, str) else tracking
    if settings is None:
        settings = ConfigParser.load_config_files(tracking)
    return list(settings.get("configs", {})) if isinstance(settings, Mapping) else []


def command_line(argv: Sequence[str] | None = None) -> CommandLine | None:
    """This process's command line (``sys.argv``) when it is ``python -m monai.bundle run`` or ``run_workflow``;
    None for any other process."""
    from monai.bundle import ConfigParser

    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py") or argv[1] not in COMMANDS:
        return None
    given = _given(argv[1], argv[2:])
    args_file = given.get("args_file")
    if args_file and not os.path.isfile(str(args_file)):
        return CommandLine([], [], missing=f"--args_file {args_file}: no such file")
    # as MONAI's update_kwargs: the args file's values, then the command line's over them (None: not given)
    values = {**(ConfigParser.load_config_file(args_file) if args_file else {}), **given}
    values = {str(k).lstrip("+"): v for k, v in values.items() if v is not None}
    files = values.get("config_file") or []
    files = [str(f) for f in (files if isinstance(files, (list, tuple)) else [files])]
    runner = runner_args()
    ids = [k for k in values if k not in runner]
    missing = next((missing_config(f) for f in files if not os.path.isfile(f)), None)
    missing = missing or tracking_problem(values.get("tracking"))
    return CommandLine(files, ids, _tracking_ids(values.get("tracking")), values, missing)


def command_line_problem(argv: Sequence[str] | None = None) -> str | None:
    """``problem`` of this process's ``python -m monai.bundle run`` command line; None for any other process."""
    line = command_line(argv)
    if line is None:
        return None
    if line.missing or not line.config_files:
        return line.missing
    return problem(line.config_files, line.ids, flag="--", extra=line.extra)


_checked: tuple[str, ...] | None = None  # the command line that passed


def check_command_line() -> None:
    """Stop with one message when this process is ``python -m monai.bundle run`` and its command line names a
    config file that does not exist or ids its configs do not define; nothing in any other process.

    Called by ``bundle.settings.check``, the first step of every config's ``run``. A command line that passed is
    not read again (the curriculum's stages run in the same process).
    """
    global _checked
    argv = tuple(sys.argv)
    if argv == _checked:
        return
    message = command_line_problem(argv)
    if message:
        fail(message)
    _checked = argv
