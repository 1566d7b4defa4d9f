"""Multi-task loss: each term counts only the images that have its target."""

from __future__ import annotations

import torch

from bundle.losses import MultiTaskLoss


def batch(has_mask=(1, 0), labels=(0, 2)):
    torch.manual_seed(0)
    pred = {"class": torch.randn(2, 4, requires_grad=True), "seg": torch.randn(2, 2, 8, 8, requires_grad=True)}
    target = {
        "label": torch.tensor(labels),
        "mask": (torch.rand(2, 1, 8, 8) > 0.5).float(),
        "has_mask": torch.tensor(has_mask, dtype=torch.float),
    }
    return pred, target


def test_segmentation_ignores_images_without_mask():
    loss = MultiTaskLoss()
    pred, target = batch()
    base = loss(pred, target)
    changed = {"class": pred["class"], "seg": pred["seg"].detach().clone()}
    changed["seg"][1, 1] += 5  # image 1 has no mask: its segmentation logits must not matter
    assert torch.allclose(loss(changed, target), base)
    changed["seg"][0, 1] += 5
    assert not torch.allclose(loss(changed, target), base)


def test_weights_and_unlabelled_images():
    pred, target = batch(labels=(-1, 2))
    only_cls = MultiTaskLoss(w_cls=1.0, w_seg=0.0)(pred, target)
    expected = torch.nn.functional.cross_entropy(pred["class"][1:], target["label"][1:])
    assert torch.allclose(only_cls, expected)
    both = MultiTaskLoss(w_cls=2.0, w_seg=0.5)(pred, target)
    seg = MultiTaskLoss(w_cls=0.0, w_seg=1.0)(pred, target)
    assert torch.allclose(both, 2 * expected + 0.5 * seg)


def test_no_targets_gives_zero_not_nan_and_gradients_flow():
    pred, target = batch(has_mask=(0, 0), labels=(-1, -1))
    loss = MultiTaskLoss()(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert pred["class"].grad is not None


def test_multilabel_bce_skips_unknown_findings():
    logits = torch.randn(2, 3)
    label = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    loss = MultiTaskLoss(multi_label=True, w_seg=0).classification(logits, label)
    known = label >= 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], label[known])
    assert torch.allclose(loss, expected)


def guided(label=(0, 2), has_mask=(1, 0)):
    """A 2-image batch whose class-0 map lies in the left half of a 4 x 4 grid and class-2 map in the right half;
    image 0 has a given mask (left half = lungs), image 1 a predicted one (seg logits: lungs in the left half)."""
    class_map = torch.full((2, 4, 4, 4), -1.0)
    class_map[:, 0, :, :2] = 2.0
    class_map[:, 2, :, 2:] = 2.0
    class_map.requires_grad_(True)
    seg = torch.zeros(2, 2, 16, 16)
    seg[:, 1, :, :8] = 5.0  # predicted lungs: the left half
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, 0, :, :8] = 1.0
    target = {"label": torch.tensor(label), "mask": mask, "has_mask": torch.tensor(has_mask, dtype=torch.float)}
    return class_map, seg, target


def test_lung_guidance_is_the_share_of_the_true_class_map_outside_the_lungs():
    loss = MultiTaskLoss(w_lung_guidance=1.0)
    class_map, seg, target = guided(label=(0, 0))  # class 0 lies in the lungs of both images
    inside = loss.lung_guidance(class_map, seg, target)
    assert inside.item() < 0.15  # bilinear up-sampling spreads a little mass over the border
    class_map, seg, target = guided(label=(2, 2))  # class 2: outside the lungs
    outside = loss.lung_guidance(class_map, seg, target)
    assert outside.item() > 0.85
    outside.backward()
    assert class_map.grad[:, 2].abs().sum() > 0 and class_map.grad[:, 0].abs().sum() == 0  # only the true class


def test_lung_guidance_uses_the_given_mask_where_there_is_one():
    loss = MultiTaskLoss(w_lung_guidance=1.0)
    class_map, seg, target = guided(label=(0, 0), has_mask=(1, 1))
    target["mask"][0] = 1 - target["mask"][0]  # image 0's given lungs: the right half, against its prediction
    target["mask"][1, 0, :, :8] = 1.0
    share = loss.lung_guidance(class_map[:1], seg[:1], {k: v[:1] for k, v in target.items()})
    assert share.item() > 0.85  # the given mask won
    target["has_mask"][0] = 0  # no given mask: the prediction (left half) is the lungs
    share = loss.lung_guidance(class_map[:1], seg[:1], {k: v[:1] for k, v in target.items()})
    assert share.item() < 0.15


def test_lung_guidance_leaves_out_unlabelled_images_and_counts_only_when_active():
    loss = MultiTaskLoss(w_lung_guidance=2.0)
    class_map, seg, target = guided(label=(-1, -1))
    assert loss.lung_guidance(class_map, seg, target).item() == 0.0
    pred, base = batch()
    pred["class_map"], pred["seg"] = guided()[0], guided()[1]
    _, _, target = guided(label=(2, 2))
    on = loss(pred, target)
    loss.guidance_active = False
    off = loss(pred, target)
    assert on.item() > off.item() + 2 * 0.85  # weight 2 x a share above 0.85
    assert MultiTaskLoss()(pred, target).item() == off.item()  # w_lung_guidance 0: the term is off


def test_lung_guidance_without_class_maps_says_what_to_build():
    pred, target = batch()
    try:
        MultiTaskLoss(w_lung_guidance=1.0)(pred, target)
    except ValueError as e:
        assert "class_maps=True" in str(e)
    else:
        raise AssertionError("no error")


def test_multi_label_lung_guidance_guides_every_positive_finding():
    loss = MultiTaskLoss(w_lung_guidance=1.0, multi_label=True)
    class_map, seg, target = guided()
    target["label"] = torch.tensor([[1, 0, 0, 0], [1, -1, 1, 0]])  # image 1: a finding in, one out of the lungs
    share = loss.lung_guidance(class_map, seg, target).item()
    assert 0.15 < share < 0.85
