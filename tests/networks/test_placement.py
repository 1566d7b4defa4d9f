"""``bundle.networks.place``: device and memory format, with the outputs, state dict, saliency and export unchanged."""

from __future__ import annotations

import torch

from bundle.networks import MultiTaskClassifier, MultiTaskNet, place
from tests.conftest import BACKBONE


def _conv_weights(network: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in network.parameters() if p.ndim == 4]


def test_channels_last_changes_the_layout_not_the_values_or_keys():
    torch.manual_seed(0)
    net = MultiTaskNet(4, BACKBONE).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
    keys = list(net.state_dict())
    placed = place(net, "cpu", channels_last="true")
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(placed))
    assert list(placed.state_dict()) == keys  # checkpoints load either way
    with torch.no_grad():
        out = placed(x)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-5)
    assert all(w.is_contiguous() for w in _conv_weights(place(MultiTaskNet(4, BACKBONE), "cpu", channels_last=False)))


def test_saliency_and_torchscript_export_work_in_channels_last():
    from bundle.networks.export import exportable
    from bundle.saliency import SaliencyInferer

    torch.manual_seed(0)
    net = MultiTaskClassifier(4, BACKBONE).eval()
    x = torch.rand(2, 1, 64, 64)
    inferer = SaliencyInferer(method="gradcampp", class_names=["a", "b", "c", "d"])
    ref = inferer(x, net)
    out = inferer(x, place(net, "cpu", channels_last=True))
    torch.testing.assert_close(out["saliency"], ref["saliency"], rtol=1e-3, atol=1e-4)
    traced = torch.jit.trace(exportable(place(MultiTaskClassifier(4, BACKBONE).eval(), "cpu", True)), x)
    assert traced(x).shape == (2, 4)
