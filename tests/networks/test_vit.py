"""The ViT backbones (bundle.networks.vit) inside MultiTaskNet: shapes, sizes, parameters, freezing, saliency, export
and pretraining heads. Several processes: every parameter gets a gradient (DistributedDataParallel's condition;
tests/configs/test_multi_gpu.py runs the overlays under torchrun)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out

from bundle.atomic import atomic_save
from bundle.checkpoints import load_pretrained, load_weights
from bundle.errors import UserError
from bundle.networks import MultiTaskClassifier, MultiTaskNet, MultiTaskSegmenter, build_encoder, encoder_channels
from bundle.networks.freezing import trainable_parameters
from bundle.networks.vit import VIT_BACKBONES, is_vit, patch_size_of
from bundle.saliency import SaliencyInferer, default_target_layer, encoder_stages
from bundle.settings import check
from bundle.ssl.inpainting import Inpainting
from bundle.ssl.masking import BatchMasks
from bundle.ssl.methods import build_method
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs/inference.json")
META = str(ROOT / "configs/metadata.json")
VIT = "vit_s16"


@pytest.fixture(scope="module", params=["mean", "token"])
def net(request) -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(4, VIT, vit_pool=request.param).eval()


def test_feature_maps_lie_on_the_patch_grid(net):
    x = torch.rand(2, 1, 64, 96)
    features = net.encode(x)
    assert features[0] is x  # the image itself: the decoder's full-resolution skip
    assert [tuple(f.shape) for f in features[1:5]] == [(2, 384, 4, 6)] * 4
    if net.vit_pool == "token":
        assert tuple(features[5].shape) == (2, 384, 1, 1)
    out = net(x)
    assert out["class"].shape == (2, 4) and out["seg"].shape == (2, 2, 64, 96)
    assert encoder_channels(VIT)[-1] == 384


def test_vit_s16_has_the_published_size():
    net = MultiTaskNet(4, VIT)
    encoder = sum(p.numel() for p in net.encoder.parameters())
    assert 21.3e6 < encoder < 21.7e6  # ViT-S/16 without its classification head: 21.47 M
    assert sum(p.numel() for p in net.decoder.parameters()) < 2e6  # a light UNETR decoder at feature size 16
    assert is_vit("vit_b16") and not is_vit("resnet10") and patch_size_of(VIT) == 16 and patch_size_of("resnet10") == 1


def test_one_state_dict_for_every_image_size(net):
    """The 14 x 14 position table is resized, so weights trained at one size run at another."""
    sizes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sizes["encoder.vit.patch_embedding.position_embeddings"] == (1, 196, 384)
    with torch.no_grad():
        a = net.encode(torch.rand(1, 1, 224, 224))[4]
        b = net.encode(torch.rand(1, 1, 32, 48))[4]
    assert a.shape[-2:] != b.shape[-2:]
    with pytest.raises(ValueError, match="multiples of 16"):
        net.encode(torch.rand(1, 1, 40, 64))


def test_every_parameter_gets_a_gradient(net):
    """No unused parameter: DistributedDataParallel would wait for its gradient."""
    net.train()
    try:
        out = net(torch.rand(2, 1, 32, 32))
        (out["class"].sum() + out["seg"].sum()).backward()
        unused = [n for n, p in net.named_parameters() if p.grad is None]
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()
    assert not unused, unused


def test_freezing_freezes_the_transformer_only():
    net = MultiTaskNet(4, VIT)
    trained = {id(p) for p in trainable_parameters(net, frozen_encoder=True)}
    assert not any(id(p) in trained for p in net.encoder.parameters())
    assert all(id(p) in trained for p in net.decoder.parameters())  # UNETR's convolutions are the decoder's
    net.train()
    assert not net.encoder.training and net.decoder.training


@pytest.mark.parametrize("method", ["gradcampp", "gradcam"])
def test_grad_cam_explains_the_patch_grid_on_the_class_path(net, method):
    expected = "encoder.patch_grid" if net.vit_pool == "mean" else "encoder.grids.11"
    assert default_target_layer(net) == expected
    assert encoder_stages(net)[-1] == expected and len(encoder_stages(net)) == 4
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    out = SaliencyInferer(method=method)(x, net)
    saliency = out["saliency"]
    assert saliency.shape == (2, 1, 64, 64) and torch.isfinite(saliency).all()
    assert saliency.amin() >= 0 and saliency.amax() <= 1 and (saliency.flatten(1).std(1) > 0).all()
    torch.testing.assert_close(out["class"], net(x)["class"])


def test_the_last_blocks_patch_tokens_do_not_reach_the_class_token():
    """Why the token pool explains the last block's input: its own patch outputs are off the class path."""
    net = MultiTaskNet(4, VIT, vit_pool="token").eval()
    with pytest.raises(ValueError, match="not on the path to the class logits"):
        SaliencyInferer(method="gradcam", target_layer="encoder.patch_grid")(torch.rand(1, 1, 32, 32), net)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "model.pt"
    atomic_save(MultiTaskNet(4, VIT).state_dict(), path)
    return path


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python")  # the traced grid size is the input's
@pytest.mark.parametrize(
    "net_id,view,use_trace",
    [("network_def", MultiTaskClassifier, False), ("network_def_seg", MultiTaskSegmenter, True)],  # both ways
)
def test_ckpt_export_equals_the_checkpoint(checkpoint, tmp_path, net_id, view, use_trace):
    ts = tmp_path / f"{net_id}.ts"
    kwargs = {"use_trace": True, "input_shape": [1, 1, 64, 64]} if use_trace else {}
    ckpt_export(
        net_id=net_id,
        filepath=str(ts),
        ckpt_file=str(checkpoint),
        meta_file=META,
        config_file=CONFIG,
        backbone=VIT,
        image_size=64,
        **kwargs,
    )
    exported = torch.jit.load(str(ts))
    reference = view(4, VIT).eval()
    reference.load_state_dict(load_weights(checkpoint))
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), reference(x), atol=1e-5, rtol=1e-5)
        if not use_trace:  # scripted, the position table is resized for any grid
            y = torch.rand(1, 1, 96, 128)
            torch.testing.assert_close(exported(y), reference(y), atol=1e-5, rtol=1e-5)


def test_verify_net_in_out_both_views():
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=CONFIG, backbone=VIT)
    seg = {"_meta_#network_data_format#outputs#pred#num_channels": 2}
    verify_net_in_out(net_id="network_def_seg", meta_file=META, config_file=CONFIG, backbone=VIT, **seg)


def test_group_masked_pretraining_feeds_fine_tuning(tmp_path):
    """GMML on the ViT: patch-aligned masks, L1 on them, and every encoder and decoder weight reaches fine-tuning."""
    torch.manual_seed(0)
    batch = BatchMasks("group", patch_size=16, seed=0)(torch.rand(3, 1, 64, 64))
    cells = batch["recon_mask"].reshape(3, 4, 16, 4, 16)
    assert (cells.amax(dim=(2, 4)) == cells.amin(dim=(2, 4))).all()  # whole patches only
    assert ((batch["recon_mask"].mean((1, 2, 3)) >= 0.5) & (batch["recon_mask"].mean((1, 2, 3)) <= 0.75)).all()
    method = Inpainting(MultiTaskNet(1, VIT, seg_channels=1), recon_loss="l1", replace_prob=0.3).train()
    out = method(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and method.encoder.vit.blocks[0].attn.qkv.weight.grad is not None
    path = tmp_path / "pretrained.pt"
    atomic_save(method.export_state(), path)
    report = load_pretrained(MultiTaskNet(4, VIT), path)
    encoder_keys = [k for k in MultiTaskNet(4, VIT).state_dict() if k.startswith(("encoder.", "decoder."))]
    assert set(encoder_keys) <= set(report["matched"])


def test_contrastive_pretraining_on_the_class_token():
    torch.manual_seed(0)
    method = build_method("simclr", backbone=VIT, vit_pool="token", proj_dim=16)
    views = torch.rand(2, 4, 1, 32, 32).unbind(0)
    out = method({"view1": views[0], "view2": views[1]})
    out["loss"].backward()
    assert method.encoder.vit.cls_token.grad is not None and method.encoder.vit.cls_token.grad.abs().sum() > 0
    assert build_encoder(VIT).state_dict().keys() <= MultiTaskNet(4, VIT).encoder.state_dict().keys()


def test_settings_accept_the_vits_and_name_a_bad_pool():
    settings = {"backbone": "vit_b16", "vit_pool": "token", "saliency_layer": "encoder.grids.11"}
    assert check(settings, "inference")["backbone"] == "vit_b16"
    with pytest.raises(UserError, match="vit_pool"):
        check({"backbone": VIT, "vit_pool": "cls"}, "train")
    assert sorted(VIT_BACKBONES) == ["vit_b16", "vit_s16"]


def test_jigsaw_tiles_fit_the_patch_grid():
    from bundle.ssl.jigsaw import Jigsaw

    jigsaw = Jigsaw(build_encoder(VIT), encoder_channels(VIT)[-1], num_permutations=4)
    tiles = jigsaw.tiles(torch.rand(2, 1, 64, 64))  # 21 px cells: 17 px tiles would not fit 16 px patches
    assert tiles.shape[-2:] == (16, 16)
    out = jigsaw({"image": torch.rand(2, 1, 64, 64)})
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="at least 48 px"):
        jigsaw.tiles(torch.rand(1, 1, 32, 32))
