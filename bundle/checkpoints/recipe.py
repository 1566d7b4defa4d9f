"""Recipes: what a weights file needs to be used correctly, written beside it as ``<name>.recipe.json``.

A recipe records the network's settings (backbone, image size, class names, multi-label, lungs only, ViT pooling),
the preprocessing and the bundle version. Every workflow that starts from weights takes the recipe's values as the
defaults of those settings (the configs' ``weights_recipe`` id), and ``check_recipe`` stops a run whose explicit
settings contradict it, naming both values.

Why a JSON file beside the weights and not entries inside the ``.pt``: ``model.pt`` stays a plain state_dict of
tensors, which every loader reads as it is: MONAI's ``CheckpointLoader``, ``monai.bundle.load`` (which, given a
state_dict wrapped in another dict, copies nothing without a word unless told its key), MONAI Label's bundle task
and ``load_state_dict(strict=True)`` (which refuses extra keys). The recipe also reads without torch, by a person or
a registry. The cost is that a file copied without its recipe has none: the workflows then say so and use their
settings unchecked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_save, atomic_write_json
from ..data.transforms import PREPROCESSING
from ..errors import fail
from ..values import as_bool

__all__ = [
    "RECIPE_KEYS",
    "recipe_path",
    "make_recipe",
    "write_recipe",
    "save_weights",
    "read_recipe",
    "check_recipe",
    "check_pretrained_recipe",
]

logger = logging.getLogger(__name__)

RECIPE_KEYS = ("backbone", "image_size", "class_names", "multi_label", "lungs_only", "vit_pool")
FORMAT = 1
# For pretrained weights only the backbone must match: fine-tuning at another image size (the ViT's position
# table is resized) or with another pooling is a choice, told with a warning, unless the recipe ``requires`` it
# (a published encoder whose patch tokens attend to a class token: bundle.networks.published).
PRETRAINED_HARD = ("backbone",)
KIND_HINTS = {
    "pretrained": "an encoder from pretraining; fine-tune it first (configs/train.json --pretrained_ckpt <it>)"
}


def recipe_path(weights: str | os.PathLike) -> str:
    """``models/model.pt`` -> ``models/model.recipe.json``."""
    stem, ext = os.path.splitext(os.fspath(weights))
    return (stem if ext in (".pt", ".pth", ".ckpt") else os.fspath(weights)) + ".recipe.json"


def make_recipe(settings: Mapping[str, Any], kind: str = "model") -> dict[str, Any]:
    """The recipe of weights made with ``settings``, as plain JSON values, with the preprocessing and version.

    ``settings`` holds the ``RECIPE_KEYS`` that apply and other fields to record (e.g. ``ssl_method``); ``kind``
    is ``"model"`` (a fine-tuned network) or ``"pretrained"`` (an encoder to fine-tune).
    """
    recipe: dict[str, Any] = {"format": FORMAT, "kind": kind}
    for key, value in settings.items():
        if value is not None:
            recipe[key] = _plain(key, value) if key in RECIPE_KEYS else value
    recipe["preprocessing"] = dict(PREPROCESSING)
    recipe["bundle_version"] = __version__
    return recipe


def _plain(key: str, value: Any) -> Any:
    """A setting's value as the JSON the recipe holds (so that comparisons do not depend on spelling)."""
    if key in ("multi_label", "lungs_only"):
        return as_bool(value, key)
    if key == "image_size":
        return int(value)
    if key == "class_names":
        return [str(n) for n in value]
    return str(value)


def write_recipe(weights: str | os.PathLike, recipe: Mapping[str, Any]) -> str:
    """Write ``recipe`` beside ``weights`` (atomically); returns the recipe's path."""
    path = recipe_path(weights)
    atomic_write_json(dict(recipe), path, indent=4)
    return path


def save_weights(state: Mapping[str, torch.Tensor], path: str | os.PathLike, recipe: Mapping[str, Any] | None) -> None:
    """``state`` (a plain state_dict) to ``path``, then its recipe beside it when there is one."""
    atomic_save(dict(state), path)
    if recipe:
        write_recipe(path, recipe)


def read_recipe(weights: str | os.PathLike | None, name: str = "ckpt_file") -> dict[str, Any]:
    """The recipe beside ``weights``; ``{}`` when there are no weights or no recipe.

    A recipe that is not a JSON object stops the run naming it (``name`` is the setting of the weights).
    """
    if not weights or not isinstance(weights, (str, os.PathLike)):
        return {}
    path = recipe_path(weights)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            recipe = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{name}: the recipe {path} of {weights} cannot be read ({e}); restore it from where the weights came")
    if not isinstance(recipe, dict):
        fail(f"{name}: the recipe {path} of {weights} holds a {type(recipe).__name__}, not a JSON object")
    return recipe


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) else str(value)


def contradictions(recipe: Mapping[str, Any], settings: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, given, recorded)`` for every recipe key whose setting differs from the recipe's value."""
    out = []
    for key in RECIPE_KEYS:
        if key in recipe and key in settings and settings[key] is not None:
            given = _plain(key, settings[key])
            if given != recipe[key]:
                out.append((key, given, recipe[key]))
    return out


def _warn_preprocessing(recipe: Mapping[str, Any], weights: str, name: str) -> None:
    made = recipe.get("preprocessing")
    if made is not None and made != dict(PREPROCESSING):
        logger.warning(
            "%s %s was made with another preprocessing (%s) than this bundle's (%s, version %s): its outputs may "
            "be wrong; use the bundle version that made it (%s)",
            name,
            weights,
            json.dumps(made),
            json.dumps(dict(PREPROCESSING)),
            __version__,
            recipe.get("bundle_version", "unknown"),
        )


def check_recipe(
    recipe: Mapping[str, Any],
    settings: Mapping[str, Any],
    weights: str | os.PathLike | None,
    name: str = "ckpt_file",
    warn_only: Sequence[str] = (),
    expect_kind: str | None = "model",
) -> None:
    """Stop when an explicit setting contradicts the recipe of the weights the run starts from.

    The configs take the recipe's values as defaults, so a difference is a value the user gave. ``warn_only``
    keys are told with a warning instead (a choice that still works, e.g. fine-tuning pretrained weights at
    another image size). Weights of another ``kind`` than ``expect_kind`` (an encoder given as a model) stop the
    run. Weights without a recipe are told with a warning: their settings cannot be checked.

    Raises:
        UserError: one message listing each contradiction (the setting, its value and the weights' value).
    """
    if not weights or not os.path.isfile(os.fspath(weights)):
        return  # no weights, or missing ones: the weights' own check names the file
    weights = os.fspath(weights)
    if expect_kind and recipe.get("kind", expect_kind) != expect_kind:
        fail(
            f"{name} {weights} holds {recipe.get('kind')} weights (its recipe {recipe_path(weights)}), not a "
            f"{expect_kind}: " + KIND_HINTS.get(str(recipe.get("kind")), "give the weights this workflow needs")
        )
    if not recipe:
        logger.warning(
            "%s %s has no recipe (%s not found): %s come from the settings and cannot be checked against the weights",
            name,
            weights,
            recipe_path(weights),
            ", ".join(RECIPE_KEYS),
        )
        return
    _warn_preprocessing(recipe, weights, name)
    found = contradictions(recipe, settings)
    for key, given, recorded in [c for c in found if c[0] in warn_only]:
        logger.warning("%s: %s is %s; %s %s was made with %s", name, key, _show(given), name, weights, _show(recorded))
    hard = [c for c in found if c[0] not in warn_only]
    if hard:
        lines = "\n".join(f"  - {k}: {_show(g)} given, the weights were made with {_show(r)}" for k, g, r in hard)
        fail(
            f"{name} {weights} was made with other settings than this run's (its recipe {recipe_path(weights)}):\n"
            f"{lines}\nLeave these settings out to use the weights' values, or give --{name} weights made with yours."
        )


def check_pretrained_recipe(recipe: Mapping[str, Any], settings: Mapping[str, Any], weights: Any) -> None:
    """``check_recipe`` for ``pretrained_ckpt``: only the backbone must match, and the keys the recipe lists under
    ``requires`` (a converted encoder with a class token requires ``vit_pool``); the others warn."""
    hard = PRETRAINED_HARD + tuple(k for k in recipe.get("requires", ()) if k in RECIPE_KEYS)
    warn = [k for k in RECIPE_KEYS if k not in hard]
    check_recipe(recipe, settings, weights, name="pretrained_ckpt", warn_only=warn, expect_kind=None)
