"""Pretrained weights transferred into a network: every tensor whose name and shape match, with an account of
the rest (a new classification head, a reconstruction head of another shape)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..distributed import unwrap
from .weights import (
    HINTS,
    WeightsError,
    examples,
    fail_weights,
    load_weights,
    module_counts,
    non_finite_problem,
    non_finite_tensors,
)

__all__ = ["load_pretrained", "MIN_MATCH"]

logger = logging.getLogger(__name__)

# Share of the encoder's tensors a pretrained file must provide. Weights of the same backbone match all of them
# (a ViT's position table at another image size is the one exception, under 1 %); weights of another backbone
# match a handful (1 of 72 for resnet18 weights in a resnet10), and training would then start, unsaid, from
# random weights. ``pretrained_min_match`` lowers it for a deliberate partial transfer.
MIN_MATCH = 0.9


def load_pretrained(
    network: nn.Module, path: str | os.PathLike | None, name: str = "pretrained_ckpt", min_match: float = MIN_MATCH
) -> dict[str, list[str]]:
    """Copy every tensor of ``path`` whose name and shape match ``network``; log what matched and what did not.

    Returns ``{"matched", "missing", "unexpected", "mismatched"}`` key lists. ``missing`` are the network's
    parameters the file does not provide (e.g. a new classification head), ``mismatched`` share a name but not
    a shape (e.g. a 1-channel reconstruction head loaded into a 2-channel segmentation head).

    A file that cannot be read, is not a state_dict, holds NaN/inf values, shares no key with ``network`` or
    provides less than ``min_match`` of the encoder's tensors (``encoder.*``; every tensor for a network without
    one) stops the run (``fail``) with a message naming ``name``, the file and the match count.
    """
    if not path:
        return {"matched": [], "missing": [], "unexpected": [], "mismatched": []}
    path, network = os.fspath(path), unwrap(network)
    try:
        source = load_weights(path, name=name)
        bad = non_finite_tensors(source)
        if bad:
            raise WeightsError(path, non_finite_problem(bad), name)
    except WeightsError as e:
        fail_weights(e)
    target = network.state_dict()
    matched = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    mismatched = [k for k, v in source.items() if k in target and target[k].shape != v.shape]
    unexpected = [k for k in source if k not in target]
    missing = [k for k in target if k not in source]
    if not matched:
        fail_weights(
            WeightsError(
                path,
                f"no key matches the network (the file's keys: {examples(source)}; the network's: "
                f"{module_counts(target)})",
                name,
            ),
            "is it a checkpoint of this bundle's encoder? (scripts/convert_weights.py converts torchvision ResNet "
            f"weights); {HINTS.get(name, '')}".rstrip("; "),
        )
    _check_share(matched, target, path, name, min_match)
    network.load_state_dict({k: source[k] for k in matched}, strict=False)

    totals = Counter(k.split(".")[0] for k in target)
    loaded = Counter(k.split(".")[0] for k in matched)
    logger.info(
        "%s %s: %d of %d keys matched (%s)",
        name,
        path,
        len(matched),
        len(target),
        ", ".join(f"{m} {loaded.get(m, 0)}/{n}" for m, n in sorted(totals.items())),
    )
    if mismatched:
        logger.info("%s: skipped for shape mismatch: %s", name, module_counts(mismatched))
    if unexpected:
        logger.info("%s: keys in the file that the network lacks: %s", name, module_counts(unexpected))
    return {"matched": matched, "missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def _check_share(matched: list[str], target: Mapping[str, Any], path: str, name: str, min_match: float) -> None:
    """Stop when the file provides less than ``min_match`` of the encoder: it was made for another network."""
    encoder = [k for k in target if k.split(".")[0] == "encoder"] or list(target)
    found = len(set(matched) & set(encoder))
    if found < min_match * len(encoder):
        fail_weights(
            WeightsError(
                path,
                f"matches {found} of the encoder's {len(encoder)} tensors ({found / len(encoder):.0%}, under "
                f"pretrained_min_match {min_match:g}): weights of another backbone or another program?",
                name,
            ),
            "give the pretrained file of this --backbone, or lower --pretrained_min_match for a deliberate partial "
            "transfer",
        )
