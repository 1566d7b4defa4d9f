"""Inpainting masks and loss: group coverage, loss on masked pixels only, outpainting keeps the holes, replacement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.networks import MultiTaskNet
from bundle.plots import plot_reconstructions
from bundle.ssl.inpainting import Inpainting
from bundle.ssl.losses import masked_reconstruction_loss
from bundle.ssl.masking import BatchMasks, paste_from_batch


def picture(height: int = 48, width: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((1, height, width), dtype=np.float32))


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (224, 224)])
def test_group_mask_coverage_within_range(size):
    coverage = BatchMasks("group", mask_ratio=(0.5, 0.75), hole_size=(0.05, 0.3)).mask(40, *size).double().mean((1, 2))
    assert coverage.min() >= 0.5 - 1 / (size[0] * size[1]) and coverage.max() <= 0.75
    assert coverage.max() - coverage.min() > 0.05  # the target is drawn, not fixed


def test_group_mask_rejects_bad_ratio():
    with pytest.raises(ValueError, match="mask_ratio"):
        BatchMasks("group", mask_ratio=(0.8, 0.5))
    with pytest.raises(ValueError, match="mask_ratio"):
        BatchMasks("group", mask_ratio=(0.5, 1.0))


@pytest.mark.parametrize("mode", ["blocks", "group", "outpaint"])
def test_only_masked_pixels_change_and_target_is_the_original(mode):
    image = picture()
    out = BatchMasks(mode=mode, seed=3)(image.unsqueeze(0))
    mask = out["recon_mask"][0]
    assert mask.shape == (1, 48, 40) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 0 < mask.mean() < 1
    assert torch.equal(out["target"][0], image)
    keep = mask[0] == 0
    assert torch.equal(out["image"][0][:, keep], image[:, keep])
    changed = out["image"][0][:, ~keep] != image[:, ~keep]
    assert changed.float().mean() > 0.99  # noise fill: (almost) every masked pixel differs


def test_outpaint_keeps_the_holes_that_blocks_drops():
    image = picture(64, 64).unsqueeze(0)
    b = BatchMasks(mode="blocks", holes=(3, 5), hole_size=(0.1, 0.3), seed=7)(image)
    o = BatchMasks(mode="outpaint", holes=(3, 5), hole_size=(0.1, 0.3), seed=7)(image)
    assert torch.equal(b["recon_mask"], 1 - o["recon_mask"])  # same holes: dropped by one, kept by the other
    holes = o["recon_mask"][0, 0] == 0
    assert torch.equal(o["image"][0][:, holes], image[0][:, holes])


def test_masks_are_reproducible_and_views_differ():
    masks = BatchMasks(mode="group", num_views=2, seed=1)
    first = masks(picture().unsqueeze(0))
    masks.set_random_state(1)
    again = masks(picture().unsqueeze(0))
    assert torch.equal(first["recon_mask"], again["recon_mask"]) and torch.equal(first["image"], again["image"])
    assert not torch.equal(first["recon_mask"], first["recon_mask_2"])


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="mask_mode 'holes'"):
        BatchMasks(mode="holes")


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_loss_counts_only_masked_pixels(kind):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    mask = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    loss = masked_reconstruction_loss(pred, target, mask, kind)
    edited = pred.clone()
    edited[mask == 0] = 5.0  # far off, but outside the mask
    assert torch.allclose(masked_reconstruction_loss(edited, target, mask, kind), loss)
    edited[mask == 1] += 0.5
    assert not torch.allclose(masked_reconstruction_loss(edited, target, mask, kind), loss)
    err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    assert torch.allclose(loss, err[mask == 1].mean())


def test_paste_from_batch_takes_masked_pixels_from_another_image():
    batch = 5
    target = torch.arange(1, batch + 1, dtype=torch.float32).view(-1, 1, 1, 1).expand(batch, 1, 8, 8).clone()
    image = torch.zeros_like(target)
    mask = torch.zeros(batch, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    torch.manual_seed(0)
    out = paste_from_batch(image, target, mask, prob=1.0)
    for b in range(batch):
        inside = out[b, 0, 2:6, 2:6]
        assert inside.unique().numel() == 1 and inside[0, 0] != target[b, 0, 0, 0]  # one donor, never itself
        assert inside[0, 0] in target[:, 0, 0, 0]
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    assert torch.equal(paste_from_batch(image, target, mask, prob=0.0), image)


def tiny_inpainting(**kwargs) -> Inpainting:
    return Inpainting(MultiTaskNet(num_classes=1, seg_channels=1, decoder_channels=(32, 16, 16, 8, 8)), **kwargs)


def test_inpainting_loss_matches_masked_loss_and_exports_encoder_decoder():
    torch.manual_seed(0)
    method = tiny_inpainting().eval()
    batch = BatchMasks(mode="blocks")(torch.stack([picture(32, 32, s) for s in range(2)]))
    out = method(batch)
    recon, _ = method.reconstruct(batch["image"])
    assert torch.allclose(out["loss"], masked_reconstruction_loss(recon, batch["target"], batch["recon_mask"]))
    assert out["embedding"].shape == (2, 512)
    keys = method.export_state().keys()
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder", "segmentation_head"}


def test_combined_objective_needs_and_uses_two_views():
    torch.manual_seed(0)
    method = tiny_inpainting(contrastive_weight=0.5)
    batch = BatchMasks(mode="group", num_views=2)(torch.stack([picture(32, 32, s) for s in range(3)]))
    out = method(batch)
    assert out["contrastive_loss"] > 0
    out["loss"].backward()
    assert method.projector[0].weight.grad is not None
    assert not any(k.startswith("projector") for k in method.export_state())
    with pytest.raises(KeyError, match="num_views 2"):
        method({k: v for k, v in batch.items() if not k.endswith("_2")})


def test_reconstruction_channels_must_match_images():
    method = Inpainting(MultiTaskNet(num_classes=1, seg_channels=2, decoder_channels=(32, 16, 16, 8, 8)))
    x = torch.rand(2, 1, 32, 32)
    batch = {"image": x, "target": x, "recon_mask": torch.ones_like(x)}
    with pytest.raises(ValueError, match="seg_channels=1"):
        method(batch)


def test_plot_reconstructions_writes_png(tmp_path):
    x = torch.rand(2, 1, 16, 16)
    path = plot_reconstructions(x, x, x, str(tmp_path / "grid.png"))
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.endswith("grid.png")
