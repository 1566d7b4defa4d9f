"""The methods by name: what the pretraining configs' ``ssl_method`` id selects, and how each is built.

One id, ``ssl_method``, names the method in every pretraining config:

* ``configs/pretrain_contrastive.json``: ``simclr | moco | byol | simsiam`` (``build_method``);
* ``configs/pretrain_inpainting.json``: ``inpainting | outpainting | group_masked`` (``mask_mode_of``);
* ``configs/pretrain_pretext.json``: ``rotation | jigsaw`` (``build_pretext``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..values import Rule, as_bool, boolean, choice, described, integer, number, optional
from .base import PretextMethod, TwoViewMethod
from .byol import BYOL
from .jigsaw import Jigsaw
from .moco import MoCoV2
from .rotation import Rotation
from .simclr import SimCLR
from .simsiam import SimSiam

__all__ = [
    "METHODS",
    "PRETEXT_METHODS",
    "INPAINTING_METHODS",
    "build_method",
    "build_pretext",
    "mask_mode_of",
    "output_name",
    "replace_prob_of",
    "pretext_options",
    "reconstruction_views",
    "reconstruction_keys",
]

logger = logging.getLogger(__name__)

METHODS: dict[str, type[TwoViewMethod]] = {"simclr": SimCLR, "moco": MoCoV2, "byol": BYOL, "simsiam": SimSiam}
PRETEXT_METHODS: dict[str, type[PretextMethod]] = {"rotation": Rotation, "jigsaw": Jigsaw}
# inpainting method -> the mask mode of bundle.ssl.masking.BatchMasks
INPAINTING_METHODS: dict[str, str] = {"inpainting": "blocks", "outpainting": "outpaint", "group_masked": "group"}


def _choose(name: str, known: Mapping[str, Any]) -> str:
    key = str(name).lower()
    if key not in known:
        raise ValueError(f"unknown ssl_method {name!r}; choose one of {', '.join(known)}")
    return key


def build_method(name: str, **kwargs: Any) -> TwoViewMethod:
    """Build a two-view method by name (``simclr | moco | byol | simsiam``) from the config's shared ids.

    Arguments a method does not take (e.g. ``queue_size`` for SimCLR) and ``None`` values (use the method's
    default) are dropped, so one config switches methods with the single ``ssl_method`` id.
    """
    key = _choose(name, METHODS)
    cls = METHODS[key]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    used = {k: v for k, v in kwargs.items() if k in accepted and v is not None}
    ignored = sorted(k for k, v in kwargs.items() if k not in accepted and v is not None)
    method = cls(**used)
    logger.info(
        "ssl_method %s: %s (not used by this method: %s)",
        key,
        ", ".join(f"{k}={v}" for k, v in sorted(used.items())),
        ", ".join(ignored) or "none",
    )
    return method


def build_pretext(
    name: str, encoder: nn.Module, feature_dim: int, options: Mapping[str, Any] | None = None
) -> PretextMethod:
    """Build ``rotation`` or ``jigsaw``; ``options`` are keyword arguments of that class (unknown ones raise)."""
    return PRETEXT_METHODS[_choose(name, PRETEXT_METHODS)](encoder, feature_dim, **dict(options or {}))


def mask_mode_of(name: str) -> str:
    """The mask mode (``blocks | outpaint | group``) of an inpainting method name."""
    return INPAINTING_METHODS[_choose(name, INPAINTING_METHODS)]


# GMML (SPCXR) pastes a patch of another image of the batch into 30 % of the masked regions; the others do not
REPLACE_PROB = {"group_masked": 0.3}


def replace_prob_of(name: str) -> float:
    """The share of masked regions filled from another image of the batch by an inpainting method's recipe."""
    return REPLACE_PROB.get(_choose(name, INPAINTING_METHODS), 0.0)


def pretext_options(name: str, num_permutations: int, tile_fraction: float) -> dict[str, Any]:
    """The keyword arguments of a pretext method's class: jigsaw's permutation set and tile size; none for
    rotation."""
    if _choose(name, PRETEXT_METHODS) == "jigsaw":
        return {"num_permutations": num_permutations, "tile_fraction": tile_fraction}
    return {}


def reconstruction_views(contrastive_weight: float) -> int:
    """Masked views per image of inpainting pretraining: two when NT-Xent between them is added, else one."""
    return 2 if contrastive_weight > 0 else 1


def reconstruction_keys(num_views: int) -> list[str]:
    """The batch keys of inpainting pretraining: the masked image, its target and mask (and the second view's)."""
    return ["image", "target", "recon_mask"] + (["image_2", "recon_mask_2"] if num_views == 2 else [])


def output_name(ssl_method: str, multi_instance: bool = False) -> str:
    """The stem of a method's output files: ``<ssl_method>`` or ``<ssl_method>_micle``.

    Every pretraining config names its files ``pretrained_<stem>.pt`` and ``pretrain_<stem>_checkpoint.pt``, so
    two methods (or a method with and without MICLe pairs) in one ``ckpt_dir`` never overwrite each other.
    """
    return str(ssl_method).lower() + ("_micle" if as_bool(multi_instance, "multi_instance") else "")


# the settings the methods consume (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "multi_instance": described(
        boolean, "MICLe: a positive pair's two views come from two images of one patient where it has two or more"
    ),
    "temperature": described(
        number(0, 10, lo_open=True), "temperature of NT-Xent (SimCLR, the combined inpainting term) and InfoNCE (MoCo)"
    ),
    "momentum": described(number(0, 1), "MoCo's key-encoder momentum; BYOL's base EMA rate"),
    "proj_dim": described(optional(integer(1)), "projector output size; null keeps the method's own"),
    "hidden_dim": described(optional(integer(1)), "projector hidden size; null keeps the method's own"),
    "pred_hidden_dim": described(
        optional(integer(1)), "predictor hidden size (BYOL, SimSiam); null keeps the method's own"
    ),
    "num_permutations": described(integer(2, 1000), "jigsaw: fixed tile permutations the head tells apart"),
    "tile_fraction": described(number(0, 1, lo_open=True), "jigsaw: side of each tile as a share of its cell"),
}
# ssl_method: the methods of each pretraining workflow
SSL_METHOD = "the pretraining method of the config"
WORKFLOW_RULES: dict[str, dict[str, Rule]] = {
    "pretrain_contrastive": {"ssl_method": described(choice(list(METHODS)), SSL_METHOD)},
    "pretrain_inpainting": {"ssl_method": described(choice(list(INPAINTING_METHODS)), SSL_METHOD)},
    "pretrain_pretext": {"ssl_method": described(choice(list(PRETEXT_METHODS)), SSL_METHOD)},
}
