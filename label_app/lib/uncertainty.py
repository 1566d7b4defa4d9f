"""Active learning: the lung segmentation's uncertainty on each unlabelled study, and the strategy that serves the
most uncertain one first.

The score is the disagreement of the lung mask under test-time augmentation: the study through the network as is,
flipped left-right and shifted by ``SHIFT`` of its width up, down, left and right; each lung probability map is
brought back onto the study's grid and the score is the mean, over the pixels every view covers, of the variance
of the lung probability across the views (0: every view agrees; at most 0.25).

Why this one: what annotators correct and the app trains from are lung masks, so the study worth annotating next is
the one whose mask the model is least sure of. The class probabilities' entropy would rank by the classification,
which is not annotated here; and the segmentation's mean variance under small, plausible changes of the input
measures sensitivity where the mask boundary is uncertain, while a single pass's pixel entropy is confidently wrong
on studies unlike the training data.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import ImageNotFoundException, MONAILabelException
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from .infers import LungSegmentation

__all__ = ["SCORE_KEY", "SHIFT", "LungUncertainty", "MostUncertain", "augmented_views", "views_variance"]

logger = logging.getLogger(__name__)

SCORE_KEY = "lung_uncertainty"  # the study's score in its datastore info, with the weights it was computed with
SHIFT = 0.04  # of the image size: about 9 px at 224, a patient positioned slightly differently


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (B, C, H, W) moved by (dy, dx) pixels, zeros where nothing moves in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _moves(size: int) -> list[tuple[int, int]]:
    s = max(1, round(SHIFT * size))
    return [(0, 0), (-s, 0), (s, 0), (0, -s), (0, s)]


def augmented_views(image: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) image to the (6, 1, H, W) views: as is, flipped left-right, and the four shifts."""
    moves = _moves(image.shape[-1])
    return torch.cat([image, image.flip(-1)] + [_shift(image, dy, dx) for dy, dx in moves[1:]])


def views_variance(lung_prob: torch.Tensor) -> float:
    """The score from the (6, 1, H, W) lung probabilities of ``augmented_views``: each map back on the study's grid,
    then the mean over the pixels every view covers of the variance across views."""
    moves = _moves(lung_prob.shape[-1])
    back = [lung_prob[0:1], lung_prob[1:2].flip(-1)] + [
        _shift(lung_prob[i + 2 : i + 3], -dy, -dx) for i, (dy, dx) in enumerate(moves[1:])
    ]
    s = moves[-1][1]
    stack = torch.cat(back)[:, 0, s:-s, s:-s].double()  # the border a shift uncovers is left out
    return float(stack.var(dim=0, unbiased=False).mean())


class LungUncertainty(ScoringMethod):
    """Scores every unlabelled study (``SCORE_KEY`` in its datastore info) with the lung segmentation's weights;
    studies scored with the same weights are not scored again, and a study the bundle cannot read is left out with
    a warning naming it. A datastore that keeps no study info (the DICOMweb archive's) gets no scores, with one
    warning."""

    def __init__(self, task: LungSegmentation) -> None:
        super().__init__("Lung mask variance under test-time flips and shifts (higher: annotate first)")
        self.task = task

    def weights_stamp(self) -> str:
        path = self.task.get_path()
        return f"{self.task.public_weights(path)}@{os.stat(path).st_mtime_ns}"

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        stamp, start, scored = self.weights_stamp(), time.monotonic(), 0
        for image in datastore.get_unlabeled_images():
            if datastore.get_image_info(image).get(f"{SCORE_KEY}_weights") == stamp:
                continue
            try:
                uri, device = datastore.get_image_uri(image), str(request.get("device", "cuda"))
                score = views_variance(self.task.lung_probabilities(uri, augmented_views, device))
            except MONAILabelException as e:
                logger.warning("uncertainty of %s left out: %s", image, e.msg)
                continue
            try:
                datastore.update_image_info(image, {SCORE_KEY: score, f"{SCORE_KEY}_weights": stamp})
            except ImageNotFoundException:  # a DICOMweb archive keeps no info for its studies
                logger.warning("%s: this datastore keeps no study info; uncertainty serves studies by id", SCORE_KEY)
                break
            scored += 1
        logger.info("%s: %d studies scored in %.1f s", SCORE_KEY, scored, time.monotonic() - start)
        return {"scored": scored, "weights": stamp}


class MostUncertain(Strategy):
    """The unlabelled study with the highest ``SCORE_KEY``; studies not scored yet come after the scored ones (by
    id), so the strategy answers while the scoring still runs."""

    def __init__(self) -> None:
        super().__init__("The unlabelled study whose lung mask the model is least sure of")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        scores = {i: datastore.get_image_info(i).get(SCORE_KEY) for i in images}
        best = min(images, key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
        scored = sum(v is not None for v in scores.values())
        logger.info("%s: %s (%d of %d unlabelled studies scored)", SCORE_KEY, best, scored, len(images))
        return {"id": best, SCORE_KEY: scores[best]}
