"""bundle.relevance and its methods in SaliencyInferer: attention rollout and the gradient-weighted relevance of the
ViT backbones (shapes, batches, class dependence, the read-out of both poolings, what a CNN is told)."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import MultiTaskNet
from bundle.relevance import AttentionRecorder, gradient_relevance, patch_relevance, rollout
from bundle.saliency import SaliencyInferer, saliency_method_check

SIZE = 64  # a 4 x 4 patch grid
CELLS = SIZE // 16
METHODS = ("rollout", "attention_gradient")


@pytest.fixture(scope="module", params=["mean", "token"])
def vit(request) -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(4, "vit_s16", vit_pool=request.param).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 1, SIZE, SIZE)


def forced_attention(net: MultiTaskNet, attention: torch.Tensor) -> list:
    """Make every block attend with ``attention`` (T, T), in every head; returns the hooks to remove."""

    def force(module, inputs, output):
        return attention.to(output.dtype).expand_as(output).clone()

    return [block.attn.drop_weights.register_forward_hook(force) for block in net.encoder.vit.blocks]


@pytest.mark.parametrize("method", METHODS)
def test_maps_shapes_range_and_outputs_of_a_plain_forward(vit, images, method):
    with torch.no_grad():
        out = SaliencyInferer(method)(images, vit)
        plain = SaliencyInferer("none")(images, vit)
    assert out["saliency"].shape == (3, 1, SIZE, SIZE)
    assert out["saliency"].min() >= 0 and torch.allclose(out["saliency"].flatten(1).amax(1), torch.ones(3))
    torch.testing.assert_close(out["class"], plain["class"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["seg"], plain["seg"], atol=1e-5, rtol=1e-4)
    assert torch.equal(out["saliency_class"], plain["class"].argmax(1))
    assert not any(block.attn.drop_weights._forward_hooks for block in vit.encoder.vit.blocks)  # hooks removed
    assert SaliencyInferer(method).explained_layer(vit) == "encoder.vit.blocks (attention)"


@pytest.mark.parametrize("method", METHODS)
def test_an_image_alone_gets_the_map_it_gets_in_a_batch(vit, images, method):
    inferer = SaliencyInferer(method)
    with torch.no_grad():
        batch = inferer(images, vit)["saliency"]
        alone = torch.cat([inferer(images[i : i + 1], vit)["saliency"] for i in range(3)])
    torch.testing.assert_close(batch, alone, atol=1e-4, rtol=1e-3)


def test_the_gradient_relevance_depends_on_the_class_and_rollout_does_not(vit, images):
    maps = {}
    for method in METHODS:
        for k in (0, 1):
            with torch.no_grad():
                out = SaliencyInferer(method, class_idx=k)(images, vit)
            assert (out["saliency_class"] == k).all()
            maps[method, k] = out["saliency"]
    assert torch.equal(maps["rollout", 0], maps["rollout", 1])
    assert (maps["attention_gradient", 0] - maps["attention_gradient", 1]).abs().amax() > 0.05


def test_identity_attention_rolls_out_to_the_identity():
    # (0.5 I + 0.5 I)^L = I: every token keeps only itself
    eye = torch.eye(5).expand(2, 3, 5, 5)
    torch.testing.assert_close(rollout([eye] * 12), torch.eye(5).expand(2, 5, 5))
    # all tokens attend to token 2: A = 1 e_2^T is idempotent, so (0.5 A + 0.5 I)^L = 0.5^L I + (1 - 0.5^L) A
    point = torch.zeros(5, 5)
    point[:, 2] = 1
    expected = 0.5**4 * torch.eye(5) + (1 - 0.5**4) * point
    torch.testing.assert_close(rollout([point.expand(1, 2, 5, 5)] * 4)[0], expected)


def rollout_with(net: MultiTaskNet, attention: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The rollout maps of ``net`` with every block's attention forced to ``attention`` (T, T)."""
    handles = forced_attention(net, attention)
    try:
        with torch.no_grad():
            return SaliencyInferer("rollout")(images, net)["saliency"]
    finally:
        for h in handles:
            h.remove()


def test_identity_attention_in_the_network_reads_out_per_pooling(images):
    for pool in ("mean", "token"):
        net = MultiTaskNet(4, "vit_s16", vit_pool=pool).eval()
        tokens = CELLS * CELLS + net.encoder.prefix
        maps = rollout_with(net, torch.eye(tokens), images)
        # mean pooling: the mean of the rows of I is 1/N for every patch, a uniform map; the class token keeps only
        # itself, so no patch reaches it: an all-zero map
        assert torch.equal(maps, torch.ones_like(maps) if pool == "mean" else torch.zeros_like(maps)), pool


def test_attention_to_one_patch_marks_that_patch(images):
    net = MultiTaskNet(4, "vit_s16", vit_pool="token").eval()
    tokens = CELLS * CELLS + 1
    point = torch.zeros(tokens, tokens)
    point[:, 1 + 5] = 1  # every token attends to patch 5: row 1, column 1 of the 4 x 4 grid
    maps = rollout_with(net, point, images)
    grid = torch.nn.functional.avg_pool2d(maps, 16)  # back to one value per patch
    assert (grid.flatten(1).argmax(1) == 5).all()
    assert grid[:, 0, 1, 1].min() > 2 * grid[:, 0, 3, 3].max()


def test_gradient_relevance_and_read_out_by_hand():
    att = torch.tensor([[0.5, 0.5], [0.25, 0.75]]).expand(1, 2, 2, 2)
    grad = torch.tensor([[1.0, -1.0], [2.0, 0.0]]).expand(1, 2, 2, 2)
    # relu(grad * A) = [[0.5, 0], [0.5, 0]]; R = I + that @ I
    expected = torch.tensor([[1.5, 0.0], [0.5, 1.0]])
    relevance = gradient_relevance([att], [grad])
    torch.testing.assert_close(relevance[0], expected)
    # mean pooling over 2 patches (a 1 x 2 grid): the mean of the rows, with and without the identity
    torch.testing.assert_close(patch_relevance(relevance, 0, 1, 2).flatten(), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(patch_relevance(relevance, 0, 1, 2, without_self=True).flatten(), torch.tensor([0.5, 0]))
    # a class token: its row over the one patch column
    assert patch_relevance(relevance, 1, 1, 1).flatten().tolist() == [0.0]
    with pytest.raises(ValueError, match="2 tokens for a 2 x 2 patch grid"):
        patch_relevance(relevance, 0, 2, 2)


def test_the_class_path_of_lungs_only_is_the_encoders_last_pass(images):
    net = MultiTaskNet(4, "vit_s16", lungs_only=True).eval()
    with AttentionRecorder(net) as recorder, torch.no_grad():
        net(images)
    assert len(recorder.attentions) == 24 and len(recorder.last_pass()) == 12
    assert recorder.last_pass()[0] is recorder.attentions[12]
    with torch.no_grad():
        out = SaliencyInferer("attention_gradient")(images, net)
    assert out["saliency"].shape == (3, 1, SIZE, SIZE) and out["seg"].shape == (3, 2, SIZE, SIZE)


def test_a_cnn_is_refused_in_one_sentence():
    msgs = saliency_method_check({"saliency": "rollout", "backbone": "resnet18"}, "evaluate")
    assert msgs == [
        "saliency: rollout explains a transformer's attention and backbone resnet18 has none: use gradcampp, gradcam "
        "or occlusion, or a ViT backbone (vit_s16, vit_b16)"
    ]
    assert saliency_method_check({"saliency": "attention_gradient", "backbone": "vit_s16"}, "evaluate") == []
    assert saliency_method_check({"saliency": "gradcampp", "backbone": "resnet18"}, "evaluate") == []
    layer = saliency_method_check({"saliency": "rollout", "backbone": "vit_s16", "saliency_layer": "x"}, "evaluate")
    assert layer and layer[0].startswith("saliency_layer: 'x' is for gradcampp and gradcam")
    with pytest.raises(ValueError, match="rollout and attention_gradient explain a ViT backbone"):
        SaliencyInferer("rollout")(torch.rand(1, 1, SIZE, SIZE), MultiTaskNet(4, "resnet18").eval())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(vit, images, method):
    with torch.no_grad():
        cpu = SaliencyInferer(method)(images, vit)["saliency"]
        gpu = SaliencyInferer(method)(images.cuda(), vit.cuda())["saliency"].cpu()
    vit.cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)
