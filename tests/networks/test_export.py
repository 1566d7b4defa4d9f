"""TorchScript export of the classification and segmentation views, and MONAI's verify_net_in_out for both."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out

from bundle.atomic import atomic_save
from bundle.checkpoints import load_weights
from bundle.networks import MultiTaskClassifier, MultiTaskNet, MultiTaskSegmenter
from bundle.networks.export import exportable
from tests.conftest import BACKBONE, ROOT

CONFIG = str(ROOT / "configs/inference.json")
META = str(ROOT / "configs/metadata.json")
SEG_META = {"_meta_#network_data_format#outputs#pred#num_channels": 2}  # verify_net_in_out reads output "pred"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "model.pt"
    atomic_save(MultiTaskNet(4, BACKBONE).state_dict(), path)  # the backbone inference.json builds
    return path


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet-b0"])
def test_exportable_keeps_weights_and_outputs(backbone):
    torch.manual_seed(0)
    net = MultiTaskClassifier(4, backbone).eval()
    fixed = exportable(MultiTaskClassifier(4, backbone)).eval()
    assert fixed.state_dict().keys() == net.state_dict().keys()
    fixed.load_state_dict(net.state_dict())
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), net(x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")  # the decoder's padding check
@pytest.mark.parametrize(
    "net_id,view,use_trace",
    [
        ("network_def", MultiTaskClassifier, True),
        ("network_def_seg", MultiTaskSegmenter, True),
        ("network_def", MultiTaskClassifier, False),  # torch.jit.script works too once exportable() is applied
        ("network_def_seg", MultiTaskSegmenter, False),
    ],
)
def test_ckpt_export_matches_checkpoint(checkpoint, tmp_path, net_id, view, use_trace):
    ts = tmp_path / f"{net_id}.ts"
    kwargs = {"use_trace": True, "input_shape": [1, 1, 64, 64]} if use_trace else {}
    ckpt_export(
        net_id=net_id,
        filepath=str(ts),
        ckpt_file=str(checkpoint),
        meta_file=META,
        config_file=CONFIG,
        image_size=64,
        **kwargs,
    )
    exported = torch.jit.load(str(ts))
    reference = view(4, BACKBONE).eval()  # the plain network class, as training builds it
    reference.load_state_dict(load_weights(checkpoint))
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5))  # not the trace input, other batch size
    with torch.no_grad():
        torch.testing.assert_close(exported(x), reference(x), atol=1e-5, rtol=1e-5)
        if not use_trace:  # a scripted model is not tied to one input size
            y = torch.rand(1, 1, 96, 128)
            torch.testing.assert_close(exported(y), reference(y), atol=1e-5, rtol=1e-5)
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(ts), _extra_files=extra)  # the bundle's metadata and config travel inside the file
    assert b"network_data_format" in extra["metadata.json"] and b"network_def_seg" in extra["inference.json"]


def test_verify_net_in_out_both_views():
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=CONFIG)
    verify_net_in_out(net_id="network_def_seg", meta_file=META, config_file=CONFIG, **SEG_META)
    with pytest.raises(ValueError, match="output channel number `2` doesn't match: `4`"):
        verify_net_in_out(net_id="network_def_seg", meta_file=META, config_file=CONFIG)
