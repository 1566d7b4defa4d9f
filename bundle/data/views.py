"""Two augmented views per image for contrastive pretraining, and MICLe's multi-instance positive pairs.

The deterministic part (read, resize) is cached once by MONAI's ``CacheDataset``; the random view transforms
(listed in ``configs/pretrain_contrastive.json``) run on every access, separately for each view, so the two
views of one image differ. With ``multi_instance`` (MICLe, Azizi et al. 2021) the second view of an image
comes from another image of the same patient where the patient has two or more; otherwise from the same image.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, get_track_meta, set_track_meta
from monai.transforms import Compose, Randomizable
from monai.utils import MAX_SEED, get_seed

from ..settings import as_bool

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
    """Each item: ``{"view1", "view2", "label", "index", "partner"}`` for contrastive pretraining.

    Args:
        data: datalist entries (``image``, optional ``patient``; ``label`` is passed through for the probe only).
        load_transform: deterministic transforms from an entry to ``{"image": (1, H, W), "label"}``; cached.
        view_transform: random array transforms applied to the image, once per view.
        multi_instance: MICLe pairing: ``view2`` from another image of the same patient when there is one.
        patient_key: entry field holding the patient id.
        cache_rate, num_workers: as MONAI's ``CacheDataset`` (workers used while caching).
        track_meta: keep MONAI's MetaTensor metadata in the views; off by default because the views only feed
            the network and the metadata bookkeeping costs time on every random transform.
        progress: show MONAI's caching progress bar.
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        load_transform: Callable | Sequence[Callable],
        view_transform: Callable | Sequence[Callable],
        multi_instance: bool = False,
        patient_key: str = "patient",
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        track_meta: bool = False,
        progress: bool = False,
    ) -> None:
        self.data = list(data)
        if not self.data:
            raise ValueError("no images to pretrain on: the training split is empty")
        load = load_transform if callable(load_transform) else Compose(list(load_transform))
        self.view_transform = view_transform if callable(view_transform) else Compose(list(view_transform))
        self.multi_instance = as_bool(multi_instance, "multi_instance")
        self.track_meta = track_meta
        self.partners = patient_groups(self.data, patient_key) if self.multi_instance else [[] for _ in self.data]
        # copy_cache=False: the view transforms make new tensors and never write into the cached image
        self.cache = CacheDataset(
            self.data,
            transform=load,
            cache_rate=cache_rate,
            num_workers=num_workers,
            copy_cache=False,
            progress=as_bool(progress, "progress"),
        )
        self.set_random_state(seed=get_seed())
        if self.multi_instance:
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

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViewDataset:
        """Seed the pairing and the view transforms together.

        MONAI's DataLoader calls this in each worker; without passing the seed on, the view transforms of all
        workers would repeat the same random sequence.
        """
        super().set_random_state(seed=seed, state=state)
        if hasattr(self.view_transform, "set_random_state"):
            self.view_transform.set_random_state(seed=int(self.R.randint(MAX_SEED)))
        return self

    def randomize(self, data: int) -> int:
        """Pick the image that gives the second view of entry ``data``."""
        others = self.partners[data]
        return int(others[self.R.randint(len(others))]) if others else data

    def view(self, image: torch.Tensor) -> torch.Tensor:
        """One random view of a cached image."""
        previous = get_track_meta()
        set_track_meta(self.track_meta)
        try:
            out = self.view_transform(image)
        finally:
            set_track_meta(previous)
        return torch.as_tensor(out) if not self.track_meta else out

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.cache[index]
        partner = self.randomize(index)
        other = self.cache[partner] if partner != index else item
        return {
            "view1": self.view(item["image"]),
            "view2": self.view(other["image"]),
            "label": item.get("label", torch.tensor(-1)),
            "index": index,
            "partner": partner,
        }
