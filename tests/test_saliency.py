"""bundle.saliency: Grad-CAM / Grad-CAM++ / occlusion maps on batches inside no_grad, target layers, lung attention."""

from __future__ import annotations

import math

import pytest
import torch
from monai.visualize import GradCAM, GradCAMpp
from torch import nn

from bundle.evaluation.attention import attention_and_masks, lung_attention, lung_share
from bundle.networks import MultiTaskClassifier, MultiTaskNet, MultiTaskSegmenter
from bundle.saliency import BatchClassScoreHooks, SaliencyInferer, default_target_layer, normalize_maps

SIZE = 64


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    full = MultiTaskNet(4, "resnet18").eval()
    cls = MultiTaskClassifier(4, "resnet18").eval()
    cls.load_state_dict(full.state_dict())
    return full, cls


def test_default_target_layer_per_backbone():
    assert default_target_layer(MultiTaskNet(2, "resnet18")) == "encoder.layer3+encoder.layer4"
    assert default_target_layer(MultiTaskNet(2, "resnet50")) == "encoder.layer3+encoder.layer4"
    assert default_target_layer(MultiTaskNet(2, "efficientnet-b0")) == "encoder._blocks.4+encoder._blocks.6"
    with pytest.raises(ValueError, match="no 'encoder'"):
        default_target_layer(nn.Linear(2, 2))


@pytest.mark.parametrize("method,reference", [("gradcam", GradCAM), ("gradcampp", GradCAMpp)])
def test_batched_maps_match_monai_per_image(nets, method, reference):
    full, cls = nets
    x = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # as inside SupervisedEvaluator
        out = SaliencyInferer(method, target_layer="encoder.layer4")(x, full)
        # one class per image, all different: MONAI's stock hooks would mix them within a batch
        hooks = BatchClassScoreHooks(cls, "encoder.layer4")
        mixed = reference(hooks, target_layers="encoder.layer4", postprocessing=normalize_maps)(
            x, class_idx=torch.arange(4)
        )
    assert out["saliency"].shape == (4, 1, SIZE, SIZE) and out["seg"].shape == (4, 2, SIZE, SIZE)
    assert torch.equal(out["saliency_class"], out["class"].argmax(1))
    ref_net = MultiTaskClassifier(4, "resnet18").eval()
    ref_net.load_state_dict(full.state_dict())
    cam = reference(ref_net, target_layers="encoder.layer4", postprocessing=lambda m: m)
    for i in range(4):  # MONAI's own implementation, one image at a time
        for maps, k in ((out["saliency"], int(out["saliency_class"][i])), (mixed, i)):
            expected = cam(x[i : i + 1], class_idx=k)
            expected = expected / expected.max()
            torch.testing.assert_close(maps[i : i + 1], expected, atol=1e-4, rtol=1e-4)


def test_outputs_equal_plain_forward_and_network_untouched(nets):
    full, cls = nets
    before = {k: v.clone() for k, v in full.state_dict().items()}
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        out = SaliencyInferer("gradcampp")(x, full)
        plain = full(x)
        no_sal = SaliencyInferer("none")(x, full)
    assert isinstance(plain, dict)  # the hooks leave the multi-task forward as it was
    torch.testing.assert_close(out["class"], plain["class"])
    torch.testing.assert_close(out["seg"], plain["seg"])
    assert "saliency" not in no_sal and torch.equal(no_sal["class"], plain["class"])
    assert all(p.grad is None for p in full.parameters()), "saliency must not leave gradients on the weights"
    assert all(torch.equal(before[k], v) for k, v in full.state_dict().items())


def test_tensor_views_and_class_choice(nets):
    full, cls = nets
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        by_name = SaliencyInferer("gradcam", class_idx="covid19", class_names=["a", "b", "c", "covid19"])(x, cls)
        by_index = SaliencyInferer("gradcam", class_idx=3)(x, full)
    assert "seg" in by_name  # MultiTaskClassifier still exposes segment()
    assert by_name["saliency_class"].tolist() == [3, 3]
    torch.testing.assert_close(by_name["saliency"], by_index["saliency"])
    seg_view = MultiTaskSegmenter(4).eval()
    seg_view.load_state_dict(full.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(by_index["seg"], seg_view(x))
    with pytest.raises(ValueError, match="not one of the class names"):
        SaliencyInferer(class_idx="cat", class_names=["a"])
    with pytest.raises(ValueError, match="saliency must be one of"):
        SaliencyInferer("lime")


def test_target_layer_override_and_errors(nets):
    full, _ = nets
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        out = SaliencyInferer("gradcam", target_layer="encoder.layer3")(x, full)
    assert out["saliency"].shape == (2, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="is not a module"):
        BatchClassScoreHooks(full, "encoder.layer9")
    with pytest.raises(ValueError, match="not on the path to the class logits"):
        SaliencyInferer("gradcam", target_layer="decoder")(x, MultiTaskNet(4))


def test_efficientnet_backbone():
    net = MultiTaskNet(4, "efficientnet-b0").eval()
    with torch.no_grad():
        out = SaliencyInferer("gradcampp")(torch.rand(2, 1, SIZE, SIZE), net)
    assert out["saliency"].shape == (2, 1, SIZE, SIZE) and float(out["saliency"].max()) <= 1


class _LeftHalf(nn.Module):
    """Class 1's logit is the brightness of the left half: only that half matters to the prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = (x[..., : x.shape[-1] // 2].mean((1, 2, 3)) - 0.95) * 100
        return torch.stack([torch.zeros_like(left), left], 1)


def test_occlusion_marks_the_region_the_prediction_depends_on():
    x = torch.ones(2, 1, 32, 32)
    with torch.no_grad():
        out = SaliencyInferer("occlusion", occlusion_mask_size=8, occlusion_overlap=0.5)(x, _LeftHalf())
    sal = out["saliency"]
    assert sal.shape == (2, 1, 32, 32) and "seg" not in out
    assert out["saliency_class"].tolist() == [1, 1]
    assert float(sal[..., :12].mean()) > 0.9 and float(sal[..., 24:].max()) < 1e-3


def test_normalize_maps_and_lung_attention():
    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, :2] = 2.0  # all mass in the top half
    maps[1, 0] = 1.0  # uniform
    out = normalize_maps(maps)
    assert float(out[0].max()) == 1 and float(out[2].abs().sum()) == 0
    mask = torch.zeros(3, 1, 4, 4)
    mask[:, 0, :2] = 1  # top half is "lung"
    att = lung_attention(out, mask)
    assert att[0] == pytest.approx(1.0) and att[1] == pytest.approx(0.5) and math.isnan(float(att[2]))
    assert lung_share(mask).tolist() == [0.5, 0.5, 0.5]  # a uniform map scores the share: the chance level


def test_attention_and_masks_chance_ratio_and_flag():
    seg = torch.zeros(3, 2, 4, 4)
    seg[:, 1, :, :1] = 5.0  # predicted lung: the left column (share 0.25)
    sal = torch.zeros(3, 1, 4, 4)
    sal[0, 0, :, :2] = 1  # half its mass in the left column
    sal[1, 0, :, 3] = 1  # the right column: outside the predicted lung, half in the true one
    true_mask = torch.zeros(3, 1, 4, 4)
    true_mask[:, 0, :2] = 1  # top half (share 0.5), used for image 1 only
    targets = {"mask": true_mask, "has_mask": torch.tensor([0, 1, 0])}
    out = attention_and_masks({"seg": seg, "saliency": sal}, targets)
    assert out["attention_gt"].tolist() == [False, True, False]
    assert out["lung_share"].tolist() == [0.25, 0.5, 0.25]
    assert out["lung_attention"][:2].tolist() == [0.5, 0.5]  # image 1: top half of the right column
    assert out["lung_attention_ratio"][:2].tolist() == [2.0, 1.0] and math.isnan(float(out["lung_attention_ratio"][2]))
    assert out["attention_outside_lungs"].tolist() == [False, False, False]  # ratio 1 is chance; NaN is not flagged
    sal[1, 0, :2] = 0  # now nothing of image 1's map is in the top half
    flagged = attention_and_masks({"seg": seg, "saliency": sal}, targets)
    assert flagged["lung_attention_ratio"][1] == 0 and flagged["attention_outside_lungs"].tolist() == [
        False,
        True,
        False,
    ]
    empty = attention_and_masks({"seg": torch.zeros(1, 2, 4, 4), "saliency": torch.ones(1, 1, 4, 4)})
    assert empty["lung_share"].item() == 0 and math.isnan(empty["lung_attention_ratio"].item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(nets):
    full, _ = nets
    x = torch.rand(4, 1, SIZE, SIZE)
    with torch.no_grad():
        cpu = SaliencyInferer("gradcampp")(x, full)
        gpu_net = MultiTaskNet(4).eval().cuda()
        gpu_net.load_state_dict(full.state_dict())
        gpu = SaliencyInferer("gradcampp")(x.cuda(), gpu_net)
    assert gpu["saliency"].is_cuda
    torch.testing.assert_close(gpu["class"].cpu(), cpu["class"], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(gpu["saliency"].cpu(), cpu["saliency"], atol=2e-2, rtol=0)


# --- explained layers: combinations of encoder stages -------------------------------------------------------------


def test_parse_target_layers():
    from bundle.saliency import parse_target_layers

    assert parse_target_layers("encoder.layer4") == (("encoder.layer4",), "mean")
    assert parse_target_layers(" encoder.layer3 + encoder.layer4") == (("encoder.layer3", "encoder.layer4"), "mean")
    assert parse_target_layers("encoder.layer3*encoder.layer4") == (("encoder.layer3", "encoder.layer4"), "product")
    assert parse_target_layers(["encoder.layer2", "encoder.layer4"])[0] == ("encoder.layer2", "encoder.layer4")
    for bad, message in (("a+b*c", "both"), ("encoder.layer4+", "empty layer name"), ("a+a", "twice")):
        with pytest.raises(ValueError, match=message):
            SaliencyInferer("gradcam", target_layer=bad)


def test_default_combination_per_backbone():
    from bundle.saliency import encoder_stages

    assert encoder_stages(MultiTaskNet(2, "resnet10")) == [f"encoder.layer{i}" for i in range(1, 5)]
    assert encoder_stages(MultiTaskNet(2, "efficientnet-b0"))[-2:] == ["encoder._blocks.4", "encoder._blocks.6"]
    assert default_target_layer(MultiTaskNet(2, "resnet10")) == "encoder.layer3+encoder.layer4"
    assert default_target_layer(MultiTaskNet(2, "efficientnet-b0")) == "encoder._blocks.4+encoder._blocks.6"


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_combined_layers_map_is_finer_in_range_and_the_mean_of_the_layers(nets, method):
    from bundle.saliency import combine_maps

    full, _ = nets
    x = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    combined = SaliencyInferer(method, target_layer="encoder.layer3+encoder.layer4")
    calls = []
    handle = full.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():  # as inside SupervisedEvaluator
            out = combined(x, full)
    finally:
        handle.remove()
    assert len(calls) == 1, "all layers' maps must come from one forward pass"
    sal = out["saliency"]
    assert sal.shape == (3, 1, SIZE, SIZE) and float(sal.min()) >= 0 and float(sal.max()) <= 1
    assert torch.allclose(sal.flatten(1).amax(1), torch.ones(3))
    grids = {k: tuple(v.shape[2:]) for k, v in combined.hooks(full).activations.items()}
    assert grids == {"encoder.layer3": (4, 4), "encoder.layer4": (2, 2)}  # 64 px: strides 16 and 32
    with torch.no_grad():
        single = [SaliencyInferer(method, target_layer=f"encoder.layer{i}")(x, full)["saliency"] for i in (3, 4)]
    torch.testing.assert_close(sal, combine_maps(single, "mean"))
    product = SaliencyInferer(method, target_layer="encoder.layer3*encoder.layer4")
    with torch.no_grad():
        torch.testing.assert_close(product(x, full)["saliency"], combine_maps(single, "product"))
    assert all(p.grad is None for p in full.parameters())


def test_combined_layers_on_efficientnet():
    net = MultiTaskNet(4, "efficientnet-b0").eval()
    with torch.no_grad():
        out = SaliencyInferer("gradcampp", target_layer="encoder._blocks.4+encoder._blocks.6")(
            torch.rand(2, 1, 64, 64), net
        )
    assert (
        out["saliency"].shape == (2, 1, 64, 64)
        and 0 <= float(out["saliency"].min()) <= float(out["saliency"].max()) <= 1
    )


def test_combined_layer_errors(nets):
    full, _ = nets
    with pytest.raises(ValueError, match="'encoder.layer9' is not a module"):
        SaliencyInferer("gradcam", target_layer="encoder.layer3+encoder.layer9")(torch.rand(1, 1, SIZE, SIZE), full)
    with pytest.raises(ValueError, match="'decoder' is not on the path"):
        SaliencyInferer("gradcam", target_layer="encoder.layer4+decoder")(torch.rand(1, 1, SIZE, SIZE), full)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_combined_layers_cuda_matches_cpu(nets):
    full, _ = nets
    x = torch.rand(2, 1, SIZE, SIZE)
    layer = "encoder.layer2+encoder.layer3+encoder.layer4"
    gpu_net = MultiTaskNet(4).eval().cuda()
    gpu_net.load_state_dict(full.state_dict())
    with torch.no_grad():
        cpu = SaliencyInferer("gradcampp", target_layer=layer)(x, full)["saliency"]
        gpu = SaliencyInferer("gradcampp", target_layer=layer)(x.cuda(), gpu_net)["saliency"]
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
