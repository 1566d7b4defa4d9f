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
