"""Masks and augmentations of reconstruction / pretext pretraining made on the training device: the masks agree in
distribution with the per-image reference (MONAI's coarse dropout, GMML's rectangles) for each mode (a wrong setting
is caught), fill with noise in each image's range, keep the other pixels, differ per image, read compact uint8
caches; the configs' augmentations agree with MONAI's per-image chain; short real runs of both configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import set_track_meta

from bundle.data.precision import compact, to_float
from bundle.data.views import BatchViews
from bundle.engines.pretraining import SSLPrepareBatch
from bundle.ssl.masking import BatchMasks
from tests.conftest import ROOT, sample_workflow, synthetic_cxr
from tests.data.reference_views import monai_chain
from tests.data.test_views import KS_TOL, ks, view_stats
from tests.ssl.reference_masks import ReconstructionMaskd

SIZE = 32
N = 300  # masks per distribution (KS_TOL: alpha = 0.001 for 300 + 300 samples)


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny tensor ops (tests/conftest.py)


def image(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    pixels, _ = synthetic_cxr(size, size, seed=seed)
    return torch.as_tensor(pixels, dtype=torch.float32).div(255).unsqueeze(0)


def mask_stats(masks: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-mask coverage and edge length ((N, H, W) bool): how much is corrupted, and in how many pieces."""
    m = masks.bool()
    edges = (m[:, 1:] != m[:, :-1]).sum((1, 2)) + (m[:, :, 1:] != m[:, :, :-1]).sum((1, 2))
    return {"coverage": m.double().mean((1, 2)).numpy(), "edges": edges.double().numpy()}


def monai_holes(mode: str, n: int = N, **settings) -> dict[str, np.ndarray]:
    """Hole count, hole sizes (pooled, per axis) and masks of ``ReconstructionMaskd``, image by image."""
    transform = ReconstructionMaskd(mode, **settings)
    transform.set_random_state(0)
    counts, sizes, masks = [], [], []
    for _ in range(n):
        masks.append(transform({"image": image()})["recon_mask"][0])
        coords = transform._dropout.hole_coords
        counts.append(len(coords))
        sizes += [(c[1].stop - c[1].start, c[2].stop - c[2].start) for c in coords]
    return {"count": np.asarray(counts), "sizes": np.asarray(sizes), "masks": torch.stack(masks)}


def batch_holes(mode: str, n: int = N, **settings) -> dict[str, np.ndarray]:
    masks = BatchMasks(mode, **settings, seed=1)
    count, _, size = masks.hole_params(n, SIZE, SIZE)
    valid = torch.arange(size.shape[1]) < count.unsqueeze(1)
    return {"count": count.numpy(), "sizes": size[valid].numpy(), "masks": masks.mask(n, SIZE, SIZE)}


def gaps(ours: dict, theirs: dict) -> dict[str, float]:
    out = {}
    if "count" in ours:
        out["count"] = ks(ours["count"], theirs["count"])
        for axis in (0, 1):
            out[f"size[{axis}]"] = ks(ours["sizes"][:, axis], theirs["sizes"][:, axis])
    a, b = mask_stats(ours["masks"]), mask_stats(theirs["masks"])
    out.update({k: ks(a[k], b[k]) for k in a})
    return out


@pytest.mark.parametrize("mode", ["blocks", "outpaint"])
def test_holes_follow_monai_coarse_dropout(mode):
    theirs = monai_holes(mode)
    assert max(gaps(batch_holes(mode), theirs).values()) < KS_TOL
    # too many holes, holes too large, or sides drawn without MONAI's carry-over: each is caught
    wrong_count = (6, 14) if mode == "blocks" else (4, 8)
    assert gaps(batch_holes(mode, holes=wrong_count), theirs)["count"] > KS_TOL
    wide = (0.05, 0.35) if mode == "blocks" else (0.15, 0.6)
    assert gaps(batch_holes(mode, hole_size=wide), theirs)["size[0]"] > KS_TOL


def test_hole_sides_carry_over_as_in_monai():
    """MONAI draws a hole's side from [previous side, largest]: the sides of one image never shrink."""
    _, _, size = BatchMasks("blocks").hole_params(64, SIZE, SIZE)
    assert bool((size[:, 1:] >= size[:, :-1]).all()) and bool((size[:, 1:] > size[:, :-1]).any())


def _group_rounds(masks: BatchMasks) -> torch.Tensor:
    """The batched rounds that make group masks on a GPU, run here on the CPU."""
    return masks._group(N, SIZE, SIZE, torch.device("cpu"))


@pytest.mark.parametrize("make", [_group_rounds, lambda m: m.mask(N, SIZE, SIZE)], ids=["device rounds", "cpu"])
def test_group_masks_follow_group_mask(make):
    theirs = monai_holes("group")
    theirs.pop("count")
    ours = {"masks": make(BatchMasks("group", seed=1))}
    assert max(gaps(ours, theirs).values()) < KS_TOL
    cover = mask_stats(ours["masks"])["coverage"]
    assert cover.min() >= 0.5 - 1 / SIZE**2 and cover.max() <= 0.75 + 1 / SIZE**2  # the halving keeps it in range
    for wrong, stat in ((dict(mask_ratio=(0.6, 0.85)), "coverage"), (dict(hole_size=(0.05, 0.6)), "edges")):
        bad = {"masks": make(BatchMasks("group", seed=1, **wrong))}
        assert gaps(bad, theirs)[stat] > KS_TOL, wrong


@pytest.mark.parametrize("mode", ["blocks", "outpaint", "group"])
def test_noise_in_each_image_range_and_the_rest_kept(mode):
    scales = torch.tensor([1.0, 0.5, 0.2, 0.8]).view(-1, 1, 1, 1)
    offsets = torch.tensor([0.0, 0.3, 0.7, 0.1]).view(-1, 1, 1, 1)
    batch = torch.stack([image(s) for s in range(4)]) * scales + offsets
    out = BatchMasks(mode, num_views=2)(batch)
    assert set(out) == {"image", "target", "recon_mask", "image_2", "recon_mask_2"}
    assert torch.equal(out["target"], batch)
    for suffix in ("", "_2"):
        corrupted, mask = out["image" + suffix], out["recon_mask" + suffix]
        assert mask.shape == (4, 1, SIZE, SIZE) and mask.dtype == torch.float32
        keep = mask == 0
        assert torch.equal(corrupted[keep], batch[keep])
        for i in range(4):
            noise = corrupted[i][mask[i] > 0]
            lo, hi = batch[i].min(), batch[i].max()
            assert noise.numel() and bool((noise >= lo).all() and (noise <= hi).all())
            assert noise.std() > 0.2 * (hi - lo)  # uniform over the range, not one value
    assert not torch.equal(out["recon_mask"], out["recon_mask_2"])  # the two views are masked independently


def test_every_mask_of_a_batch_is_its_own_and_seeded():
    batch = image().unsqueeze(0).expand(8, -1, -1, -1)
    for mode in ("blocks", "outpaint", "group"):
        masks = BatchMasks(mode, seed=3)
        m = masks(batch)["recon_mask"].flatten(1)
        assert all(not torch.equal(m[i], m[j]) for i in range(8) for j in range(i + 1, 8)), mode
        masks.set_random_state()
        assert torch.equal(masks(batch)["recon_mask"].flatten(1), m)


def test_compact_uint8_images_and_the_views_first():
    batch = torch.stack([image(s) for s in range(4)])
    stored = compact(batch, "uint8")
    views = BatchViews(SIZE, crop_min_scale=1.0, affine_prob=1.0, hist_shift_prob=0.0, blur_prob=0.0, noise_prob=0.0)
    masks = BatchMasks("blocks", views=views)
    out = masks(stored)
    assert out["target"].dtype == torch.float32 and 0 <= out["target"].min() and out["target"].max() <= 1
    masks.set_random_state()  # one stream: the views' and the masks' together
    again = masks(to_float(stored))
    assert all(torch.allclose(out[k], again[k], atol=1e-6) for k in out)
    assert not torch.allclose(out["target"], to_float(stored))  # the target is the augmented image
    no_views = BatchMasks("blocks")(stored)
    assert torch.equal(no_views["target"], to_float(stored))


def test_prepare_batch_masks_the_single_image():
    stored = compact(torch.stack([image(s) for s in range(4)]), "uint8")
    batch = {"image": stored, "label": torch.zeros(4)}
    prepared, _ = SSLPrepareBatch(keys=["image", "target", "recon_mask"], views=BatchMasks("group"))(batch, "cpu")
    assert set(prepared) == {"image", "target", "recon_mask"} and prepared["image"].dtype == torch.float32
    views = BatchViews(SIZE, crop_min_scale=1.0)
    prepared, _ = SSLPrepareBatch(keys=["image"], views=views)(batch, "cpu")
    assert prepared["image"].shape == (4, 1, SIZE, SIZE) and prepared["image"].dtype == torch.float32
    assert torch.equal(SSLPrepareBatch(keys=["image"])(batch)[0]["image"], stored)  # no views: as it came


def test_identity_crop_copies_the_image():
    """crop_min_scale 1.0 at the image's own size and nothing else on: the view is the image itself."""
    batch = torch.stack([image(s) for s in range(4)])
    off = dict(affine_prob=0.0, contrast_prob=0.0, hist_shift_prob=0.0, blur_prob=0.0, noise_prob=0.0)
    still = BatchViews(SIZE, crop_min_scale=1.0, **off)
    p = still.sample(4, SIZE, SIZE)
    assert torch.equal(p.crop, torch.tensor([[0.0, 0.0, SIZE, SIZE]] * 4))
    assert torch.equal(still(batch), batch)
    assert torch.allclose(still._warp(batch, p), batch, atol=1e-5)  # the resampling would give it too


def parse(name: str, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / f"{name}.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": SIZE, **override})
    return parser


@pytest.mark.parametrize(
    "name, key, wrong, stat",
    [
        ("pretrain_inpainting", "train#augment", {"rotate_range": 0.5}, "corner"),
        ("pretrain_pretext", "train#views", {"translate_range": 8}, "corner"),
    ],
)
def test_config_augmentations_agree_with_the_monai_chain(name, key, wrong, stat):
    """The config's batched augmentations against MONAI's per-image chain with their settings, without the masks."""
    views = parse(name).get_parsed_content(key)
    chain = monai_chain(views)
    set_track_meta(False)
    try:
        theirs = torch.stack([torch.as_tensor(chain(image())) for _ in range(N)])
    finally:
        set_track_meta(True)
    ours = views(image().unsqueeze(0).expand(N, -1, -1, -1))
    a, b = view_stats(ours), view_stats(theirs)
    assert max(ks(a[k], b[k]) for k in a) < KS_TOL, {k: ks(a[k], b[k]) for k in a}
    bad = parse(name, **{f"{key}#{k}": v for k, v in wrong.items()})
    worse = bad.get_parsed_content(key)(image().unsqueeze(0).expand(N, -1, -1, -1))
    assert ks(view_stats(worse)[stat], b[stat]) > KS_TOL


def run_config(name: str, tmp_path: Path, **overrides) -> ConfigWorkflow:
    """One epoch at 64 px on eight sample images."""
    wf = sample_workflow(name, tmp_path, **overrides)
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == len(wf.parser.get_parsed_content("train#dataloader"))
    assert np.isfinite(trainer.state.output["loss"].item())
    wf.finalize()
    return wf


@pytest.mark.parametrize(
    "name, method, overrides",
    [
        ("pretrain_inpainting", "inpainting", {}),
        ("pretrain_inpainting", "outpainting", {"contrastive_weight": 0.5}),
        ("pretrain_inpainting", "group_masked", {}),
        ("pretrain_pretext", "rotation", {}),
        ("pretrain_pretext", "jigsaw", {"num_permutations": 10}),
    ],
)
def test_config_runs_with_the_masks_made_on_the_device(name, method, overrides, tmp_path):
    wf = run_config(name, tmp_path, ssl_method=method, **overrides)
    item = wf.parser.get_parsed_content("train#dataset")[0]
    assert item["image"].dtype == torch.uint8 and "target" not in item  # the workers stop at the cache
    assert wf.parser.get_parsed_content("train#views") is not None
    assert (tmp_path / "models" / f"pretrained_{method}.pt").is_file()
