"""The image pairs of two-view pretraining: each image and the image that gives its second view.

The deterministic part (read, resize) is cached once by MONAI's ``CacheDataset``; an item holds the two cached
images as they are (compact integers stay compact: a quarter of the bytes to collate and copy to the device), and
their random views are made batched on the training device (``bundle.data.views.BatchViews``, called by
``bundle.engines.pretraining.SSLPrepareBatch``). With ``multi_instance`` (MICLe, Azizi et al. 2021) the second image
of an entry is another image of the same patient where the patient has two or more; otherwise the same image.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import Compose, Randomizable
from monai.utils import get_seed

from ..values import as_bool
from .cache import cached_dataset

__all__ = ["TwoViewDataset", "patient_groups"]

logger = logging.getLogger(__name__)


def patient_groups(data: Sequence[Mapping[str, Any]], patient_key: str = "patient") -> list[list[int]]:
    """For each entry, the indices of the OTHER entries of the same patient (empty without a patient id)."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, entry in enumerate(data):
        patient = entry.get(patient_key)
        if patient is not None and patient != "":
            members[str(patient)].append(i)
    others: list[list[int]] = [[] for _ in data]
    for idx in members.values():
        for i in idx:
            others[i] = [j for j in idx if j != i]
    return others


class TwoViewDataset(Randomizable, torch.utils.data.Dataset):
    """Each item: ``{"image1", "image2", "label", "index", "partner"}`` for two-view pretraining.

    ``image1`` is the cached image of entry ``index``; ``image2`` that of entry ``partner`` (the MICLe partner, or
    the same entry); both (1, H, W) as cached. ``label`` is passed through for the probe only.

    Args:
        data: datalist entries (``image``, optional ``patient``, optional ``label``).
        load_transform: deterministic transforms from an entry to ``{"image": (1, H, W), "label"}``; cached.
        multi_instance: MICLe pairing: ``image2`` from another image of the same patient when there is one.
        patient_key: entry field holding the patient id.
        cache_rate, num_workers: as MONAI's ``CacheDataset`` (workers used while caching).
        progress: show MONAI's caching progress bar.
        cache, cache_dir: where the loaded images are kept (``memory`` | ``disk`` | ``none``,
            ``bundle.data.cache.cached_dataset``).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        load_transform: Callable | Sequence[Callable],
        multi_instance: bool = False,
        patient_key: str = "patient",
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        progress: bool = False,
        cache: str = "memory",
        cache_dir: str | None = None,
    ) -> None:
        self.data = list(data)
        if not self.data:
            raise ValueError("no images to pretrain on: the training split is empty")
        load = load_transform if callable(load_transform) else Compose(list(load_transform))
        self.multi_instance = as_bool(multi_instance, "multi_instance")
        self.partners = patient_groups(self.data, patient_key) if self.multi_instance else [[] for _ in self.data]
        # copy_cache=False: the items hand the cached images on, and the views are new tensors made from them
        self.cache = cached_dataset(
            self.data,
            load,
            cache=cache,
            cache_dir=cache_dir,
            cache_rate=cache_rate,
            num_workers=num_workers,
            copy_cache=False,
            progress=as_bool(progress, "progress"),
        )
        self.set_random_state(seed=get_seed())
        if self.multi_instance:
            self._log_pairs(patient_key)

    def _log_pairs(self, patient_key: str) -> None:
        """Say how many images MICLe pairs with another image of their patient (none: plain two-view pretraining)."""
        paired = sum(1 for p in self.partners if p)
        patients = len({str(e.get(patient_key)) for e, p in zip(self.data, self.partners) if p})
        logger.info(
            "multi_instance (MICLe): %d of %d images have another image of the same patient (%d patients); "
            "the others pair two views of one image",
            paired,
            len(self.data),
            patients,
        )
        if paired == 0:
            logger.warning(
                "multi_instance is on but no patient has two or more images (field %r): this is plain %s",
                patient_key,
                "two-view pretraining",
            )

    def __len__(self) -> int:
        return len(self.data)

    def randomize(self, data: int) -> int:
        """Pick the image that gives the second view of entry ``data`` (MONAI's DataLoader seeds ``self.R``)."""
        others = self.partners[data]
        return int(others[self.R.randint(len(others))]) if others else data

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.cache[index]
        partner = self.randomize(index)
        other = self.cache[partner] if partner != index else item
        return {
            "image1": torch.as_tensor(item["image"]),
            "image2": torch.as_tensor(other["image"]),
            "label": item.get("label", torch.tensor(-1)),
            "index": index,
            "partner": partner,
        }
