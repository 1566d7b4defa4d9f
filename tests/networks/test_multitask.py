"""The multi-task network, its tensor views and its encoder."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import MultiTaskClassifier, MultiTaskNet, MultiTaskSegmenter, build_encoder, encoder_channels


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet-b0"])
def test_outputs_and_views_share_weights(backbone):
    torch.manual_seed(0)
    net = MultiTaskNet(num_classes=4, backbone=backbone).eval()
    x = torch.rand(2, 1, 64, 64)
    out = net(x)
    assert out["class"].shape == (2, 4) and out["seg"].shape == (2, 2, 64, 64)
    cls, seg = MultiTaskClassifier(4, backbone=backbone).eval(), MultiTaskSegmenter(4, backbone=backbone).eval()
    cls.load_state_dict(net.state_dict())
    seg.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(cls(x), out["class"].detach())
        torch.testing.assert_close(seg(x), out["seg"].detach())


def test_encoder_is_reachable_with_matching_keys():
    net = MultiTaskNet(num_classes=3)
    enc = build_encoder("resnet18")
    assert set(enc.state_dict()) == {k.removeprefix("encoder.") for k in net.state_dict() if k.startswith("encoder.")}
    feats = net.encode(torch.rand(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(encoder_channels("resnet18"))


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'"):
        MultiTaskNet(2, backbone="resnet7")


def test_traced_and_scripted_views_match_on_new_inputs():
    # MONAI's resnet18 shortcut reads ``out.data``: a plain trace would freeze the example input's shortcut
    net = MultiTaskClassifier(4).eval()
    traced = torch.jit.trace(net, torch.rand(1, 1, 64, 64))
    scripted = torch.jit.script(MultiTaskSegmenter(4).eval())
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net(x))
        seg = MultiTaskSegmenter(4).eval()
        seg.load_state_dict(scripted.state_dict())
        torch.testing.assert_close(scripted(x), seg(x))


def test_class_maps_are_grad_cam_of_the_deepest_stage_and_only_in_training():
    torch.manual_seed(0)
    net = MultiTaskNet(4, backbone="resnet10", class_maps=True).eval()
    x = torch.rand(2, 1, 64, 64)
    assert set(net(x)) == {"class", "seg"}  # evaluation and inference never pay for them
    deepest = net.encode(x)[-1].detach().requires_grad_(True)
    net.classifier(deepest)[:, 3].sum().backward()
    grad_cam = torch.relu((deepest.grad.mean((2, 3), keepdim=True) * deepest).sum(1))
    cam = torch.relu(net.class_activation_maps([deepest.detach()])[:, 3])
    assert torch.allclose(cam / (deepest.shape[-1] * deepest.shape[-2]), grad_cam, atol=1e-6)
    out = net.train()(x)
    assert out["class_map"].shape == (2, 4, 2, 2)


def test_class_maps_refuse_what_has_no_full_image_map():
    for kwargs in ({"lungs_only": True}, {"backbone": "vit_s16", "vit_pool": "token"}):
        with pytest.raises(ValueError, match="class_maps needs the classifier to pool the full image's deepest map"):
            MultiTaskNet(4, class_maps=True, **{"backbone": "resnet10", **kwargs})
