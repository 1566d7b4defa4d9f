"""Weights files read safely: tensors only, unwrapped, finite, and matching the network when asked.

Every weights file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so no code
in a file ever runs. A ``.safetensors`` file (how RAD-DINO and timm publish their encoders) is read with the
format's reference reader, ``safetensors.torch.load_file``: tensors only by design. A file that is missing,
truncated, corrupt, unsafe or made for another network stops the run with one message naming the setting it came
from, the file and what is wrong (``bundle.errors.fail``).
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import nn

from ..atomic import atomic_save
from ..distributed import unwrap
from ..errors import fail

__all__ = ["WeightsError", "load_weights", "check_weights", "non_finite_tensors"]

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("model", "network", "state_dict")  # {"model": state_dict, ...} files are unwrapped
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_EXAMPLES = 3  # names listed in a message before "..."

# What to do about a bad file, by the config id it came from.
HINTS = {
    "pretrained_ckpt": "pass another --pretrained_ckpt (e.g. the pretrained_*.pt of a pretraining config), or none "
    "to start from random weights",
    "ckpt_file": "pass --ckpt_file <a model.pt written by configs/train.json>, or --ckpt_dir <its folder>",
    "ckpt_dir": "pass --ckpt_dir <the folder where configs/train.json wrote model.pt>, or train first",
}
_MISSINGHINTS = {
    "ckpt_file": "train first (configs/train.json), or pass --ckpt_file <model.pt> or --ckpt_dir <its folder>",
    "ckpt_dir": "train first (configs/train.json), or pass --ckpt_dir <the folder with model.pt>",
}


class WeightsError(ValueError):
    """A weights file that cannot be used: ``str()`` is ``"<name> <path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str, name: str = "weights") -> None:
        super().__init__(path, problem, name)
        self.path, self.problem, self.name = os.fspath(path), problem, name

    def __str__(self) -> str:
        return f"{self.name} {self.path}: {self.problem}"


def examples(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:_EXAMPLES]) + (", ..." if len(names) > _EXAMPLES else "")


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.:])\s|\n", str(text).strip(), maxsplit=1)[0].rstrip(".:") or type(text).__name__


def _not_weights(path: str) -> str:
    """What a file that no PyTorch reader understands looks like, in a few words."""
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the weights: fetch them with `git lfs pull`"
    problem = "is not a PyTorch weights file, or is corrupt"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return problem
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"{problem} (it is text, starting {first!r})" if text.isprintable() or "\n" in text else problem


def read_file(path: str | os.PathLike, name: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with every way it can fail told in one ``WeightsError``."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise WeightsError(path, "file not found", name)
    if os.path.isdir(path):
        raise WeightsError(path, "is a folder, not a weights file", name)
    if not os.path.exists(path):
        raise WeightsError(path, "is a broken link (its target does not exist)", name)
    if os.path.getsize(path) == 0:
        raise WeightsError(path, "is empty (0 bytes): an interrupted copy or download?", name)
    if path.endswith(".safetensors"):
        return read_safetensors(path, name, map_location)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe or ("Weights only load failed" in str(e) and zipfile.is_zipfile(path)):
            what = f" ({unsafe.group(1)})" if unsafe else ""
            raise WeightsError(
                path,
                f"holds pickled Python objects besides tensors{what}; refused unread, since unpickling them could "
                "run code. Only plain state_dicts load: re-save it as torch.save(model.state_dict(), path) where "
                "you trust its source",
                name,
            ) from e
        raise WeightsError(path, _not_weights(path), name) from e
    except EOFError as e:
        raise WeightsError(path, "is truncated (its data ends early): an interrupted write or copy?", name) from e
    except RuntimeError as e:
        if "zip archive" in str(e) or "PytorchStreamReader" in str(e):
            raise WeightsError(
                path, f"is truncated or corrupt (an incomplete PyTorch file: {first_sentence(e)})", name
            ) from e
        raise WeightsError(path, f"cannot be loaded ({first_sentence(e)})", name) from e
    except OSError as e:
        raise WeightsError(path, f"cannot be read ({e.strerror or e})", name) from e
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        # what the legacy (non-zip) reader raises on text or random bytes
        raise WeightsError(path, _not_weights(path), name) from e


def read_safetensors(path: str, name: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors (``safetensors.torch.load_file``), its failures told in one ``WeightsError``."""
    try:
        return load_safetensors(path, device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if _not_weights(path).startswith("is a Git LFS"):
            raise WeightsError(path, _not_weights(path), name) from e
        raise WeightsError(
            path, f"is not a readable .safetensors file, or is truncated ({first_sentence(e)})", name
        ) from e


def _unwrap(state: Any, path: str, name: str) -> dict[str, torch.Tensor]:
    """The plain state_dict in ``state``: wrapper entries and prefixes removed, every value a tensor."""
    for key in WRAPPER_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise WeightsError(path, f"holds a {type(state).__name__}, not a state_dict of tensors", name)
    if not state:
        raise WeightsError(path, "holds an empty state_dict", name)
    other = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if other:
        raise WeightsError(
            path,
            f"is not a state_dict of tensors: {examples(other)} "
            f"{'is' if len(other) == 1 else 'are'} not tensors (a resume checkpoint of another program?)",
            name,
        )
    out = {}
    for key, value in state.items():
        key = str(key)
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in ``obj`` holding NaN or infinite values.

    ``obj`` is a tensor or nested mappings/sequences of tensors (a state_dict, an optimizer's state_dict, a
    resume state). One device synchronisation per device, however many tensors.
    """
    flags: dict[torch.device, list[tuple[str, torch.Tensor]]] = defaultdict(list)

    def walk(value: Any, name: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                flags[value.device].append((name, torch.isfinite(value).all()))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}.{i}" if name else str(i))

    walk(obj, prefix)
    bad = []
    for entries in flags.values():
        finite = torch.stack([f for _, f in entries]).cpu().tolist()
        bad += [n for (n, _), ok in zip(entries, finite) if not ok]
    return bad


def non_finite_problem(bad: list[str]) -> str:
    return (
        f"holds NaN or infinite values in {len(bad)} tensor{'s' if len(bad) > 1 else ''} ({examples(bad)}): the "
        "run that wrote it diverged"
    )


def load_weights(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", name: str = "weights"
) -> dict[str, torch.Tensor]:
    """Load a state_dict with ``weights_only=True``; unwraps ``{"model"|"network"|"state_dict": sd}`` files.

    ``module.`` and ``_orig_mod.`` key prefixes (DistributedDataParallel, torch.compile) are removed.

    Args:
        path: the weights file.
        map_location: where the tensors go.
        name: the setting the file came from (e.g. ``"pretrained_ckpt"``), named in the error.

    Raises:
        WeightsError: a ``ValueError`` naming ``name``, the file and what is wrong (missing, empty, truncated,
            corrupt, unsafe: holding pickled objects other than tensors, or not a state_dict). Config-facing
            callers (``load_pretrained``, ``check_weights``, ``TrainingCheckpointer``) turn it into ``fail``.
    """
    path = os.fspath(path)
    return _unwrap(read_file(path, name, map_location), path, name)


def module_counts(keys: Iterable[str]) -> str:
    return ", ".join(f"{m} {n}" for m, n in sorted(Counter(k.split(".")[0] for k in keys).items())) or "none"


def mismatch(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> str | None:
    """A short account of how ``source`` differs from ``target`` in keys and shapes; None when they match."""
    missing = [k for k in target if k not in source]
    unexpected = [k for k in source if k not in target]
    shapes = [k for k in source if k in target and tuple(source[k].shape) != tuple(target[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the network's keys missing ({module_counts(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} keys the network lacks ({module_counts(unexpected)})")
    if shapes:
        examples = "; ".join(
            f"{k} {list(source[k].shape)} in the file, {list(target[k].shape)} in the network"
            for k in shapes[:_EXAMPLES]
        )
        parts.append(f"{len(shapes)} shapes differ ({examples}{'; ...' if len(shapes) > _EXAMPLES else ''})")
    return "; ".join(parts) or None


def fail_weights(error: WeightsError, hint: str | None = None) -> NoReturn:
    hint = hint if hint is not None else HINTS.get(error.name, "")
    fail(f"{error}{'; ' + hint if hint else ''}", cause=error)


def _normalised_copy(state: Mapping[str, torch.Tensor], path: str, name: str) -> str:
    """``state`` written as a plain state_dict to a temporary folder removed at exit; returns the copy's path."""
    folder = tempfile.mkdtemp(prefix="cxr-weights-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    copy = os.path.join(folder, os.path.basename(path) or "model.pt")
    atomic_save(dict(state), copy)
    logger.info("%s %s: wrapped or prefixed keys; loading a plain copy of its state_dict (%s)", name, path, copy)
    return copy


def check_weights(path: str | os.PathLike, network: nn.Module | None = None, name: str = "ckpt_file") -> str:
    """Check a model file before MONAI's ``CheckpointLoader`` reads it; returns the path it should load.

    The file is loaded (``weights_only=True``) and must be a state_dict of finite tensors; with ``network``, it
    must also match the network strictly (same keys and shapes). Files that ``load_weights`` unwraps (``module.``
    or ``_orig_mod.`` prefixes, ``{"network"|"state_dict": sd}``) are accepted: as ``CheckpointLoader`` with
    ``load_dict={"model": network}`` reads a plain state_dict or ``{"model": sd}`` only, such a file is handed on
    as a plain copy in a temporary folder.

    Args:
        path: the model file.
        network: the network it is loaded into, or None to check readability and finiteness only.
        name: the config id the path came from (``"ckpt_file"``, ``"ckpt_dir"``), named in messages.

    Returns:
        ``path``, or the path of the plain copy.
    """
    path = os.fspath(path)
    try:
        raw = read_file(path, name)
        state = _unwrap(raw, path, name)
        bad = non_finite_tensors(state)
        if bad:
            raise WeightsError(path, non_finite_problem(bad), name)
        if network is not None:
            problem = mismatch(state, unwrap(network).state_dict())
            if problem:
                raise WeightsError(
                    path, f"does not match the network (another backbone or class list?): {problem}", name
                )
    except WeightsError as e:
        fail_weights(e, _MISSINGHINTS.get(name) if e.problem == "file not found" else None)
    # what CheckpointLoader(load_dict={"model": network}) loads: checkpoint["model"] if present, else the file
    as_read = raw["model"] if isinstance(raw, Mapping) and "model" in raw else raw
    if isinstance(as_read, Mapping) and list(map(str, as_read)) == list(state):
        return path
    return _normalised_copy(state, path, name)
