"""bundle.engines.multitask: batches reach the network as plain tensors, compact ones turned back into floats."""

from __future__ import annotations

import torch
from monai.data import MetaTensor

from bundle.data.precision import compact, pack_mask
from bundle.engines.multitask import MultiTaskPrepareBatch


def test_metatensor_batches_reach_the_network_as_plain_tensors():
    """A training batch as the random transforms give it (MetaTensors with metadata): plain tensors out, same values
    and the same memory on the CPU (no copy)."""
    image = MetaTensor(torch.rand(2, 1, 8, 8), meta={"filename_or_obj": ["a.png", "b.png"]})
    batch = {
        "image": image,
        "mask": MetaTensor((torch.rand(2, 1, 8, 8) > 0.5).float()),
        "label": MetaTensor(torch.tensor([1, 3])),
        "has_mask": torch.tensor([1.0, 0.0]),
        "image_path": ["a.png", "b.png"],
    }
    inputs, targets = MultiTaskPrepareBatch()(batch, torch.device("cpu"))
    assert type(inputs) is torch.Tensor and all(type(t) is torch.Tensor for t in targets.values())
    assert set(targets) == {"label", "mask", "has_mask"}
    assert torch.equal(inputs, image.as_tensor()) and inputs.data_ptr() == image.data_ptr()
    assert torch.equal(targets["label"], torch.tensor([1, 3]))


def test_compact_batches_become_float_images_and_masks():
    """A validation batch from the cache: uint8 images and bit-packed masks, turned into [0, 1] float32."""
    image = torch.rand(2, 1, 8, 16)
    mask = (torch.rand(2, 1, 8, 16) > 0.5).float()
    batch = {"image": compact(image), "mask": pack_mask(mask), "label": torch.tensor([0, 2]), "has_mask": torch.ones(2)}
    inputs, targets = MultiTaskPrepareBatch()(batch, torch.device("cpu"))
    assert inputs.dtype == torch.float32 and (inputs - image).abs().max() <= 1 / 510 + 1e-6
    assert targets["mask"].dtype == torch.float32 and torch.equal(targets["mask"], mask)
