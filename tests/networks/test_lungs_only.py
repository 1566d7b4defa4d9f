"""``lungs_only``: the classifier sees only the predicted lungs; parameters, views, export and saliency follow."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ckpt_export

from bundle.atomic import atomic_save
from bundle.networks import MultiTaskClassifier, MultiTaskNet, MultiTaskSegmenter, lung_mask
from bundle.saliency import BatchClassScoreHooks, SaliencyInferer, _class_logits
from tests.conftest import BACKBONE, ROOT

SIZE = 64


def _fixed_segmentation(net: MultiTaskNet, batch: int) -> torch.Tensor:
    """Make ``net.segment`` return one fixed lung (a centred rectangle) whatever the image; returns its logits.

    The mask then cannot move when pixels outside it change, so any change of the class logits would come from
    those pixels reaching the classifier.
    """
    seg = torch.full((batch, 2, SIZE, SIZE), -4.0)
    seg[:, 0] = 4.0
    seg[:, 1, 16:48, 12:52] = 8.0
    net.segment = lambda features: seg  # instance attribute: overrides the method for this object only
    return seg


def _outside_changed(x: torch.Tensor, seg: torch.Tensor, dilation: int) -> torch.Tensor:
    """``x`` with every pixel outside the dilated mask of ``seg`` replaced by bright noise (text markers, borders)."""
    keep = lung_mask(seg, dilation).bool()
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 3 + 1
    return torch.where(keep, x, noise)


def _pair(lungs_only: bool, view=MultiTaskNet) -> MultiTaskNet:
    torch.manual_seed(0)
    return view(4, BACKBONE, lungs_only=lungs_only).eval()


def test_lung_mask_thresholds_detaches_and_dilates():
    seg = torch.zeros(1, 2, 9, 9, requires_grad=True)
    with torch.no_grad():
        seg[0, 1, 4, 4] = 1.0  # one lung pixel: p = sigmoid(1) > 0.5; elsewhere p = 0.5, not lung
    mask = lung_mask(seg)
    assert not mask.requires_grad and mask.sum() == 1 and mask[0, 0, 4, 4] == 1
    grown = lung_mask(seg, dilation=2)
    assert grown.sum() == 25 and grown[0, 0, 2:7, 2:7].all()  # a (2 * 2 + 1) square
    assert lung_mask(torch.tensor([[[[0.3, -0.3]]]])).flatten().tolist() == [1.0, 0.0]  # one channel: sigmoid


@pytest.mark.parametrize("view", [MultiTaskNet, MultiTaskClassifier])
def test_class_ignores_pixels_outside_the_mask_only_when_lungs_only(view):
    x = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for lungs_only in (True, False):
        net = _pair(lungs_only, view)
        seg = _fixed_segmentation(net, 2)
        y = _outside_changed(x, seg, int(net.lung_margin * SIZE + 0.5))
        assert (y != x).float().mean() > 0.4  # most of the image did change
        with torch.no_grad():
            a, b = net(x), net(y)
        a, b = (a["class"], b["class"]) if isinstance(a, dict) else (a, b)
        outputs[lungs_only] = (a, b)
    torch.testing.assert_close(outputs[True][0], outputs[True][1], rtol=0, atol=0)
    assert (outputs[False][0] - outputs[False][1]).abs().max() > 1e-3  # the default classifier reads them


def test_state_dict_is_the_same_both_ways():
    lungs, plain = _pair(True), _pair(False)
    assert list(lungs.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(lungs.state_dict())  # strict, both directions
    lungs.load_state_dict(plain.state_dict())
    for view in (MultiTaskClassifier, MultiTaskSegmenter):
        view(4, BACKBONE).load_state_dict(lungs.state_dict())


def test_segmentation_is_of_the_full_image_and_class_loss_leaves_the_seg_head_alone():
    torch.manual_seed(0)
    lungs = MultiTaskNet(4, BACKBONE, lungs_only=True).eval()
    plain = MultiTaskNet(4, BACKBONE).eval()
    plain.load_state_dict(lungs.state_dict())
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(lungs(x)["seg"], plain(x)["seg"], rtol=0, atol=0)
    lungs.train()(x)["class"].sum().backward()
    seg_grads = [p.grad for n, p in lungs.named_parameters() if n.startswith(("decoder.", "segmentation_head."))]
    assert all(g is None or not g.any() for g in seg_grads)  # the mask is detached
    assert lungs.encoder.conv1.weight.grad.abs().sum() > 0  # the class path trains the encoder


def test_bad_lungs_only_settings_are_named():
    with pytest.raises(ValueError, match="lungs_only"):
        MultiTaskNet(4, BACKBONE, lungs_only="maybe")
    with pytest.raises(ValueError, match="lung_margin"):
        MultiTaskNet(4, BACKBONE, lung_margin=0.7)
    assert MultiTaskNet(4, BACKBONE, lungs_only="true").lungs_only is True


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python")  # the decoder's padding check, the margin
def test_torchscript_equals_eager():
    eager = _pair(True, MultiTaskClassifier)
    traced = torch.jit.trace(eager, torch.rand(1, 1, SIZE, SIZE))
    scripted = torch.jit.script(eager)
    x = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))  # not the trace input
    y = torch.rand(2, 1, 96, 128)
    with torch.no_grad():
        reference = eager(x)
        assert (reference - _pair(False, MultiTaskClassifier)(x)).abs().max() > 1e-4  # the lungs-only path
        torch.testing.assert_close(traced(x), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scripted(x), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scripted(y), eager(y), atol=1e-5, rtol=1e-5)  # another size: its own margin


@pytest.mark.parametrize("method", ["gradcampp", "occlusion"])
def test_saliency_explains_the_class_path_and_segments_the_full_image(method):
    net = _pair(True)
    x = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    inferer = SaliencyInferer(method=method, occlusion_mask_size=16, occlusion_overlap=0.0)
    with torch.no_grad():
        out = inferer(x, net)
        reference = net(x)
        full = net.encode(x)
        masked = net.encode(net.lungs_input(x, reference["seg"]))
    torch.testing.assert_close(out["class"], reference["class"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["seg"], reference["seg"], atol=1e-5, rtol=1e-5)
    assert out["saliency"].shape == (2, 1, SIZE, SIZE) and torch.isfinite(out["saliency"]).all()
    logits, features = _class_logits(net, x)
    torch.testing.assert_close(features[-1], full[-1])  # the features handed to the segmentation head
    if method == "gradcampp":
        hooks = BatchClassScoreHooks(net, "encoder.layer4")
        hooks(x)
        # the layer Grad-CAM explains saw the lung-masked image: the last encoder call
        torch.testing.assert_close(hooks.activations["encoder.layer4"], masked[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python")
def test_ckpt_export_of_inference_config_gives_the_lungs_only_outputs(tmp_path):
    trained = _pair(True)
    ckpt, ts = tmp_path / "model.pt", tmp_path / "model.ts"
    atomic_save(trained.state_dict(), ckpt)
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(ckpt),
        meta_file=str(ROOT / "configs" / "metadata.json"),
        config_file=str(ROOT / "configs" / "inference.json"),
        lungs_only=True,
        use_trace=True,
        input_shape=[1, 1, SIZE, SIZE],
    )
    x = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), trained(x)["class"], atol=1e-5, rtol=1e-5)
