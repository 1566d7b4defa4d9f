"""Values as users type them: one boolean parser, the rules that check one setting, and command-line options.

``python -m monai.bundle run --resume false`` passes the STRING ``"false"``, which Python reads as true; every
boolean id of the bundle goes through ``as_bool`` so that all of them accept the same spellings.

A rule takes a value and returns what is wrong with it (``"must be ..."``) or None. The components that consume
an id declare its rule beside the registry it checks (``bundle.networks.RULES``, ``bundle.data.cache.RULES``,
...) from the building blocks here; ``bundle.settings`` gathers them. This module is a leaf: it imports nothing
of the bundle, so every layer can use it, and it knows no component: ``option`` takes a rule, and
``bundle.settings.option`` takes a setting id.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

_TRUE = ("true", "1", "yes", "y", "on", "t")
_FALSE = ("false", "0", "no", "n", "off", "f", "none", "")
# the pairs users type, true first (docs/settings.md lists them; ``none`` and "" are false without a true twin)
BOOLEAN_SPELLINGS = tuple(zip(_TRUE, _FALSE))

# the autocast dtypes of ``amp`` (``amp_dtype``): bfloat16 keeps float32's range, float16 needs the loss scaling
AMP_DTYPES = ("bfloat16", "float16")

Rule = Callable[[Any], "str | None"]  # a problem ("must be ...") or None
# a rule over several ids: the settings (id -> value) and the workflow's name give one line per problem
Check = Callable[[Mapping[str, Any], str], "list[str]"]


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


# ---------------------------------------------------------------------------------------------------------------
# rules for one value


def is_int(v: Any) -> bool:
    """An integer, and not a bool (``True`` is an int in Python, never a count here)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_number(v: Any) -> bool:
    """An int or float, and not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    """An integer in [lo, hi] (either bound may be None)."""
    allowed = "an integer" + (f" >= {lo}" if hi is None and lo is not None else "")
    allowed += f" in [{lo}, {hi}]" if lo is not None and hi is not None else ""

    def rule(v: Any) -> str | None:
        if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
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
        if not is_number(v) or not math.isfinite(float(v)):
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

    rule.allowed = f"{allowed_text(inner)}, or null"  # type: ignore[attr-defined]  # a new function per call
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


def described(rule: Rule | None, text: str, allowed: str | None = None) -> Rule:
    """``rule`` carrying a one-line ``description`` of its setting, for the settings reference (docs/settings.md).

    The result is a NEW function calling ``rule``: shared rules such as ``boolean`` check many ids, and an
    attribute set on them would give every such id the last description written. ``rule`` None accepts every
    value (a check over several ids decides); ``allowed`` then says what is allowed, as ``allowed_text`` reads it.
    """

    def rule_(v: Any) -> str | None:
        return None if rule is None else rule(v)

    rule_.description = text  # type: ignore[attr-defined]
    rule_.allowed = allowed  # type: ignore[attr-defined]
    rule_.described_rule = rule  # type: ignore[attr-defined]
    return rule_


def allowed_text(rule: Rule | None) -> str:
    """What a rule allows, in words: its ``allowed`` text, else what it says of a value nothing accepts (an
    ``object()``), without the leading "must be "."""
    if rule is None:
        return "any value"
    given = getattr(rule, "allowed", None) or PATHS_ALLOWED.get(rule)
    if given:
        return given
    if getattr(rule, "described_rule", None) is not None:  # a ``described`` wrapper: what its rule allows
        return allowed_text(rule.described_rule)  # type: ignore[attr-defined]
    problem = rule(object()) or "any value"
    return problem[len("must be ") :] if problem.startswith("must be ") else problem


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


# what the path rules allow, in words: their message for a value of the wrong type names no condition on disk
PATHS_ALLOWED: dict[Rule, str] = {
    existing_folder: "an existing folder",
    existing_file: "an existing readable file",
    folder_or_file: "an existing folder or file",
    output_folder: "a writable folder, or one that can be created",
}


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


def is_true(value: Any, name: str) -> bool:
    """``value`` is a valid boolean and true (an invalid one is reported by its own rule, not by every check)."""
    return boolean(value) is None and as_bool(value, name)


def device_type(v: Any) -> str | None:
    """``cpu``, ``cuda``, ... of a device or its name; None when ``device`` refuses it."""
    import torch

    return torch.device(v).type if device(v) is None else None


def show(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for messages."""
    text_ = repr(value)
    return text_ if len(text_) <= 80 else text_[:77] + "..."


def _parse_text(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def option(checker: Rule, name: str = "value") -> Callable[[str], Any]:
    """An argparse ``type`` checking a command-line value with a rule, so that scripts and configs share them.

    The text is read as an integer, else a number, else kept as text; a value the rule refuses stops argparse
    with ``argument --<flag>: <value> <what is allowed>`` (exit status 2) before any work. ``name`` is the
    type's name in argparse's own messages.
    """

    def parse(text: str) -> Any:
        value = _parse_text(text)
        problem = checker(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{show(value)} {problem}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse
