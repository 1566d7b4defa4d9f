"""What the app refuses before any work: request parameters, study ids, uploaded studies and labels, training
options. Each check raises ``RefusedError`` with an HTTP status and one message that names what is wrong and what is
accepted; ``without_paths`` keeps server paths out of every message a client gets.

Only the standard library and the bundle: the checks run (and are tested) in either environment.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from bundle.data.datalist import check_entries

__all__ = [
    "RefusedError",
    "without_paths",
    "parse_params",
    "check_id",
    "check_suffix",
    "check_study_file",
    "check_label_file",
    "check_train_options",
]

# an absolute POSIX path inside a message: a slash that starts a token, then path characters
_ABSOLUTE = re.compile(r"(?<![\w.:/-])/[^\s'\"(),;:\[\]{}]+")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class RefusedError(Exception):
    """A request the app will not run: ``status`` (4xx) and ``detail``, the message the client gets."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.status, self.detail = status, without_paths(detail)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.detail}"


def without_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its file name (answers name files, never server folders)."""
    return _ABSOLUTE.sub(lambda m: os.path.basename(m.group(0).rstrip("/")) or "/", text)


def parse_params(text: str | None, what: str = "params") -> dict[str, Any]:
    """The JSON object of a request's ``params`` form field (empty: ``{}``); anything else is a 422."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise RefusedError(422, f"{what} is not JSON ({e}): give a JSON object, e.g. {{}}") from None
    if not isinstance(value, dict):
        raise RefusedError(422, f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def check_id(value: Any, what: str = "image") -> str:
    """``value`` as a datastore id: letters, digits and ``_.+-``, not a path (a path is a 400)."""
    if not isinstance(value, str) or not value:
        raise RefusedError(422, f"no {what} id given")
    if "/" in value or "\\" in value or value.startswith("."):
        raise RefusedError(
            400, f"{what} {os.path.basename(value)!r} is not an id of the datastore: paths are not accepted"
        )
    if not _ID.match(value):
        raise RefusedError(422, f"{what} id {value!r} may hold only letters, digits and _ . + -")
    return value


def check_suffix(filename: str | None, accepted: tuple[str, ...], what: str) -> str:
    """The suffix of an uploaded file's name, one of ``accepted`` (e.g. ``.png``); else a 415."""
    name = os.path.basename(filename or "")
    suffix = next((s for s in accepted if name.lower().endswith(s)), None)
    if suffix is None:
        raise RefusedError(415, f"{what} {name!r}: not a file the bundle reads; accepted: {', '.join(accepted)}")
    return suffix


def _first_problem(entries: list[dict[str, str]]) -> str | None:
    """The bundle's entry check (both files decode, the mask has the image's shape) on one entry."""
    problems = check_entries(entries, 1, require_label=False, num_threads=1)
    return problems[0] if problems else None


def check_study_file(path: str, name: str) -> None:
    """An uploaded study the bundle can read (``read_cxr``), else a 422 naming ``name``."""
    problem = _first_problem([{"_id": name, "image": path}])
    if problem:
        raise RefusedError(422, f"upload {problem}: not stored; send a PNG, JPEG or DICOM radiograph")


def check_label_file(study: str, label: str, image_id: str) -> None:
    """An uploaded lung mask for the study file ``study`` that the bundle can train from, else a 422."""
    problem = _first_problem([{"_id": image_id, "image": study, "mask": label}])
    if problem:
        raise RefusedError(
            422, f"label for {problem}: not stored; send a mask (0 = background, non-zero = lung) of the study's size"
        )


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# the options a train request may carry besides those the train task lists as choices: (check, what is accepted)
TRAIN_RULES: dict[str, tuple[Any, str]] = {
    "max_epochs": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "learning_rate": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "train_batch_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "val_batch_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "val_split": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "early_stop_patience": (lambda v: _is_int(v, -1), "an integer >= -1 (-1: off)"),
    "pretrained": (lambda v: isinstance(v, bool), "true or false"),
    "multi_gpu": (lambda v: isinstance(v, bool), "true or false"),
    "gpus": (lambda v: isinstance(v, str) and re.match(r"^(all|\d+(,\d+)*)$", v), "'all' or GPU indices as '0,1'"),
    "name": (lambda v: isinstance(v, str) and bool(_ID.match(v)), "a run name of letters, digits and _ . + -"),
    "tracking_uri": (lambda v: v == "" or str(v).startswith(("http://", "https://")), "'' or an http(s) URL"),
    "tracking_experiment_name": (lambda v: isinstance(v, str), "a string"),
    "client_id": (lambda v: isinstance(v, str), "a string"),
}


def _option_problem(key: str, value: Any, config: Mapping[str, Any]) -> str | None:
    """Why ``value`` is not accepted for option ``key`` (None when it is)."""
    choices = config.get(key)
    if key not in TRAIN_RULES and isinstance(choices, list):
        if value in choices or (isinstance(value, list) and value and all(v in choices for v in value)):
            return None
        return f"{key}={value!r}: one of {choices}"
    rule = TRAIN_RULES.get(key)
    if rule is None or key not in set(config) | {"client_id"}:
        accepted = sorted(k for k in config if k in TRAIN_RULES or isinstance(config[k], list))
        return f"unknown option {key!r}; options: {', '.join(accepted)}"
    return None if rule[0](value) else f"{key}={value!r}: {rule[1]}"


def check_train_options(options: Any, config: Mapping[str, Any], model: str) -> None:
    """Training options (a JSON object) the train task ``model`` accepts, given its ``config``; else one 422 that
    lists every option refused."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise RefusedError(422, f"training options for {model!r} must be a JSON object")
    problems = [p for k, v in options.items() if (p := _option_problem(k, v, config))]
    if problems:
        raise RefusedError(422, f"training {model!r} not started: {'; '.join(problems)}")
