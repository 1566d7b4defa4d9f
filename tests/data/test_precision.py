"""Compact cache precision: round trips, refused dtypes, the loading transforms' last step and the bytes per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from PIL import Image

from bundle.data.precision import (
    CACHE_DTYPES,
    Compactd,
    ToFloatd,
    cached_bytes,
    compact,
    mask_to_float,
    max_value,
    pack_mask,
    to_float,
    unpack_mask,
)
from bundle.settings import RULES
from tests.conftest import ROOT

SIZE = 224


def test_round_trip_error_is_half_a_step():
    image = torch.rand(2, 1, 16, 16)
    image[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # both ends are exact
    for name, top in (("uint8", 255.0), ("uint16", 65535.0)):
        stored = compact(image, name)
        assert stored.dtype == CACHE_DTYPES[name][0] and stored.shape == image.shape
        back = to_float(stored)
        assert back.dtype == torch.float32 and back.shape == image.shape
        assert (back - image).abs().max() <= 0.5 / top + 1e-6, name
        assert back[0, 0, 0, 0] == 0 and back[0, 0, 0, 1] == 1
    assert torch.equal(to_float(compact(image, "float32")), image)  # float32: no conversion


def test_values_outside_zero_one_are_clamped_and_dtypes_chosen():
    stored = compact(torch.tensor([-0.5, 0.5, 1.5]), "uint8")
    assert stored.tolist() == [0, 128, 255]
    assert to_float(stored, torch.float16).dtype == torch.float16
    assert to_float(torch.ones(2, dtype=torch.float64)).dtype == torch.float32  # floating inputs are only cast
    assert max_value(torch.uint16) == 65535.0 and max_value(torch.float16) == 1.0


def test_unknown_precisions_are_refused():
    with pytest.raises(ValueError, match="cache_dtype must be one of uint8, uint16, float32, got 'int8'"):
        compact(torch.zeros(2), "int8")
    with pytest.raises(ValueError, match="no cache precision stores images as torch.int32"):
        to_float(torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="cache_dtype must be one of"):
        Compactd(cache_dtype="half")  # when the pipeline is built, not in a caching worker
    assert RULES["cache_dtype"]("uint8") is None and RULES["cache_dtype"]("UINT16") is None
    assert "must be one of uint8, uint16, float32" in RULES["cache_dtype"]("bfloat16")
    assert Compactd(cache_dtype="UINT16").cache_dtype == "uint16"  # the rule accepts any case, so does the transform


def test_masks_pack_eight_pixels_a_byte():
    mask = (torch.rand(3, 1, 16, 24) > 0.5).float()
    packed = pack_mask(mask)
    assert packed.shape == (3, 1, 16, 3) and packed.dtype == torch.uint8
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy().astype(np.uint8), axis=-1))  # numpy's layout
    assert torch.equal(unpack_mask(packed), mask)
    assert torch.equal(mask_to_float(packed, 24), mask)  # packed: a width of 24 / 8
    assert torch.equal(mask_to_float(mask.to(torch.uint8), 24), mask)  # unpacked uint8: only cast, not scaled
    with pytest.raises(ValueError, match="multiple of 8, got 10"):
        pack_mask(torch.zeros(1, 4, 10))


def test_compactd_and_to_floatd_keep_mask_values():
    image = torch.rand(1, 8, 16)
    mask = (torch.rand(1, 8, 16) > 0.5).float()
    stored = Compactd(keys="image", cache_dtype="uint16", mask_keys="mask")({"image": image, "mask": mask, "label": 2})
    assert stored["image"].dtype == torch.uint16 and stored["mask"].dtype == torch.uint8 and stored["label"] == 2
    assert stored["mask"].shape == (1, 8, 2)  # packed bits
    assert type(stored["image"]) is torch.Tensor  # no MetaTensor bookkeeping in the cache
    back = ToFloatd(keys="image", mask_keys="mask")(stored)
    assert back["image"].dtype == back["mask"].dtype == torch.float32
    assert torch.equal(back["mask"], mask)  # 0/1, not divided by 255
    assert (back["image"] - image).abs().max() <= 0.5 / 65535 + 1e-6
    assert Compactd(mask_keys="mask")({"image": image})["image"].dtype == torch.uint8  # a missing mask is skipped
    odd = Compactd(mask_keys="mask")({"image": image[..., :5], "mask": mask[..., :5]})  # a width 8 does not divide
    assert odd["mask"].shape == (1, 8, 5) and torch.equal(ToFloatd(mask_keys="mask")(odd)["mask"], mask[..., :5])


def load_transforms(cache_dtype: str, image_size: int = SIZE) -> Compose:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": image_size, "cache_dtype": cache_dtype})
    return Compose(parser.get_parsed_content("load_transforms"))


@pytest.fixture
def radiographs(tmp_path: Path) -> list[dict]:
    """An 8-bit PNG with a mask, and a 16-bit PNG without one."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 260), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray((rng.random((300, 260)) > 0.5).astype(np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(rng.integers(0, 65536, (280, 280), dtype=np.uint16)).save(tmp_path / "b.png")
    return [
        {"image": str(tmp_path / "a.png"), "mask": str(tmp_path / "a_mask.png"), "label": 0},
        {"image": str(tmp_path / "b.png"), "label": 1},
    ]


def test_cached_bytes_per_224_image_with_uint8(radiographs):
    """What a cache holds per 224 x 224 image with uint8: 49 KB of image and 6 KB of mask bits (float32: 392 KB)."""
    per_image = {}
    for name in ("uint8", "float32"):
        items = [load_transforms(name)(dict(e)) for e in radiographs]
        sizes = {cached_bytes(it) for it in items}
        assert len(sizes) == 1  # the same for an 8-bit and a 16-bit source
        per_image[name] = sizes.pop()
    assert per_image["uint8"] <= 60 * 1024, per_image
    # image (1 byte a pixel) + mask (1 bit a pixel) + the label (int64) and has_mask (float32) scalars
    assert per_image["uint8"] == SIZE * SIZE + SIZE * SIZE // 8 + 8 + 4
    assert per_image["float32"] == 4 * SIZE * SIZE + SIZE * SIZE // 8 + 8 + 4  # float32 images, the masks still bits


@pytest.mark.parametrize("cache_dtype", ["uint8", "uint16"])
def test_mixed_8_and_16_bit_sources_collate(radiographs, cache_dtype):
    """8-bit and 16-bit sources cache as one precision, so a batch of both collates and converts back to floats."""
    transform = load_transforms(cache_dtype, image_size=64)
    batch = next(iter(DataLoader(Dataset(radiographs, transform), batch_size=2, num_workers=0)))
    assert batch["image"].shape == (2, 1, 64, 64) and batch["image"].dtype == CACHE_DTYPES[cache_dtype][0]
    assert batch["mask"].shape == (2, 1, 64, 8) and batch["mask"].dtype == torch.uint8  # packed bits
    floats = ToFloatd(keys="image", mask_keys="mask")(batch)
    reference = Compose(transform.transforms[:-1])  # the same pipeline without Compactd: the float images
    expected = [reference(dict(e)) for e in radiographs]
    images = torch.stack([torch.as_tensor(e["image"]) for e in expected])
    assert (floats["image"] - images).abs().max() <= 0.5 / CACHE_DTYPES[cache_dtype][1] + 1e-6
    assert torch.equal(floats["mask"], torch.stack([torch.as_tensor(e["mask"]) for e in expected]))
    assert floats["mask"][0].sum() > 0 and floats["mask"][1].sum() == 0  # the mask, and the empty one
