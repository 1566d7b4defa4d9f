"""Two augmented views per image for contrastive pretraining, and MICLe's multi-instance positive pairs.

The deterministic part (read, resize) is cached once by MONAI's ``CacheDataset``; the random view transforms
(listed in ``configs/pretrain_contrastive.json``) run on every access, separately for each view, so the two
views of one image differ. With ``multi_instance`` (MICLe, Azizi et al. 2021) the second view of an image
comes from another image of the same patient where the patient has two or more; otherwise from the same image.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, Randomizable
from monai.utils import MAX_SEED, get_seed

from ..values import Rule, as_bool, choice, described, integer, number, number_or_range
from .cache import cached_dataset
from .precision import to_float

__all__ = ["TwoViewDataset", "patient_groups", "VIEWS_ON", "views_on_device"]

# where the random views are made: per image in the DataLoader workers, or batched on the training device
VIEWS_ON = ("device", "workers")


def views_on_device(views_on: str) -> bool:
    """Whether ``views_on`` (``device`` | ``workers``, any case) makes the random transforms on the training device."""
    where = str(views_on).strip().lower()
    if where not in VIEWS_ON:
        raise ValueError(f"views_on must be one of {', '.join(VIEWS_ON)}, got {views_on!r}")
    return where == "device"


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

    With ``views_on="device"`` the item holds the two cached images instead of views, ``{"image1", "image2",
    "label", "index", "partner"}`` (``image2`` is the MICLe partner's image, or the same image), and the views are
    made batched on the training device (``bundle.data.batch_views.BatchViews`` in ``SSLPrepareBatch``).

    Args:
        data: datalist entries (``image``, optional ``patient``; ``label`` is passed through for the probe only).
        load_transform: deterministic transforms from an entry to ``{"image": (1, H, W), "label"}``; cached.
        view_transform: random array transforms applied to the image, once per view (unused, and may be None,
            with ``views_on="device"``).
        multi_instance: MICLe pairing: ``view2`` from another image of the same patient when there is one.
        patient_key: entry field holding the patient id.
        cache_rate, num_workers: as MONAI's ``CacheDataset`` (workers used while caching).
        track_meta: keep MONAI's MetaTensor metadata in the views; off by default because the views only feed
            the network and the metadata bookkeeping costs time on every random transform.
        progress: show MONAI's caching progress bar.
        views_on: ``workers`` (default): the views are made here, per image, in the DataLoader workers;
            ``device``: the items carry the images and the views are made from the batch on the training device.
        cache, cache_dir: where the loaded images are kept (``memory`` | ``disk`` | ``none``,
            ``bundle.data.cache.cached_dataset``).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        load_transform: Callable | Sequence[Callable],
        view_transform: Callable | Sequence[Callable] | None,
        multi_instance: bool = False,
        patient_key: str = "patient",
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        track_meta: bool = False,
        progress: bool = False,
        cache: str = "memory",
        cache_dir: str | None = None,
        views_on: str = "workers",
    ) -> None:
        self.data = list(data)
        if not self.data:
            raise ValueError("no images to pretrain on: the training split is empty")
        load = load_transform if callable(load_transform) else Compose(list(load_transform))
        self.views_on = "device" if views_on_device(views_on) else "workers"
        if view_transform is None and self.views_on == "workers":
            raise ValueError("views_on='workers' needs the view transforms")
        self.view_transform = (
            view_transform if callable(view_transform) or view_transform is None else Compose(list(view_transform))
        )
        self.multi_instance = as_bool(multi_instance, "multi_instance")
        self.track_meta = track_meta
        self.partners = patient_groups(self.data, patient_key) if self.multi_instance else [[] for _ in self.data]
        # copy_cache=False: the view transforms make new tensors and never write into the cached image
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
            out = self.view_transform(to_float(torch.as_tensor(image)))  # the cache may hold compact integers
        finally:
            set_track_meta(previous)
        return torch.as_tensor(out) if not self.track_meta else out

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.cache[index]
        partner = self.randomize(index)
        other = self.cache[partner] if partner != index else item
        if self.views_on == "device":
            # as cached (compact integers stay compact): a quarter of the bytes to collate and copy to the device
            return {
                "image1": torch.as_tensor(item["image"]),
                "image2": torch.as_tensor(other["image"]),
                "label": item.get("label", torch.tensor(-1)),
                "index": index,
                "partner": partner,
            }
        return {
            "view1": self.view(item["image"]),
            "view2": self.view(other["image"]),
            "label": item.get("label", torch.tensor(-1)),
            "index": index,
            "partner": partner,
        }


probability = number(0, 1)
non_negative = number(0)

# the settings of the views, per image here or batched in bundle.data.batch_views (bundle.settings gathers them)
RULES: dict[str, Rule] = {
    "views_on": described(
        choice(VIEWS_ON),
        "where pretraining's views, augmentations and masks are made: batched on the training device, or per image in the workers",
    ),
    "crop_min_scale": described(number(0, 1, lo_open=True), "random resized crop: smallest share of each side kept"),
    "hflip_prob": described(
        probability, "horizontal flip probability (a flipped radiograph puts the heart on the right)"
    ),
    "affine_prob": described(probability, "``RandAffine`` probability"),
    "rotate_range": described(number(0, math.pi), "``RandAffine`` rotation range", "a number in [0, pi] (radians)"),
    "scale_range": described(number(0, 1, hi_open=True), "``RandAffine`` scale range (0.1: +-10 %)"),
    "contrast_prob": described(probability, "``RandAdjustContrast`` probability"),
    "gamma_range": described(number_or_range(number(0, lo_open=True)), "``RandAdjustContrast`` gamma"),
    "hist_shift_prob": described(probability, "``RandHistogramShift`` probability"),
    "hist_shift_points": described(number_or_range(integer(3)), "``RandHistogramShift`` control points"),
    "blur_prob": described(probability, "``RandGaussianSmooth`` probability"),
    "blur_sigma": described(number_or_range(non_negative), "``RandGaussianSmooth`` sigma, in pixels"),
    "noise_prob": described(probability, "``RandGaussianNoise`` probability"),
    "noise_std": described(non_negative, "``RandGaussianNoise`` standard deviation"),
}
