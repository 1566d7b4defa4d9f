"""torchvision-layout ResNet weights onto the encoder: names, the 3->1 channel fold, what is reported unmapped."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from bundle.checkpoints import load_pretrained
from bundle.networks import MultiTaskNet
from bundle.networks.conversion import convert_torchvision_resnet, format_report
from scripts.convert_weights import main as convert_main


def torchvision_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of torchvision's resnet18 state_dict (ImageNet head included)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{name}"] = torch.rand(c, generator=g)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(100)

    state["conv1.weight"] = torch.randn(64, 3, 7, 7, generator=g)
    bn("bn1", 64)
    cin = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            state[f"{p}.conv1.weight"] = torch.randn(c, cin if block == 0 else c, 3, 3, generator=g)
            bn(f"{p}.bn1", c)
            state[f"{p}.conv2.weight"] = torch.randn(c, c, 3, 3, generator=g)
            bn(f"{p}.bn2", c)
            if block == 0 and layer > 1:
                state[f"{p}.downsample.0.weight"] = torch.randn(c, cin, 1, 1, generator=g)
                bn(f"{p}.downsample.1", c)
        cin = c
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_resnet18_maps_every_encoder_key_and_folds_conv1():
    source = torchvision_resnet18_state()
    weights, report = convert_torchvision_resnet(source, "resnet18")
    encoder_keys = MultiTaskNet(num_classes=1).encoder.state_dict().keys()
    assert set(weights) == {f"encoder.{k}" for k in encoder_keys}
    assert report["not_provided"] == [] and report["folded"] == ["conv1.weight"]
    assert torch.allclose(weights["encoder.conv1.weight"], source["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(weights["encoder.layer3.1.conv2.weight"], source["layer3.1.conv2.weight"])
    assert torch.equal(weights["encoder.bn1.running_var"], source["bn1.running_var"])
    unmapped = report["unmapped"]
    assert set(unmapped) == {k for k in source if k.startswith("fc.") or ".downsample." in k}
    assert "type A" in unmapped["layer2.0.downsample.0.weight"] and "dropped" in unmapped["fc.weight"]
    assert "conv1 folded" in format_report(report)


def test_folded_filter_on_grey_equals_rgb_filter_on_grey_copied_to_three_channels():
    source = torchvision_resnet18_state()
    weights, _ = convert_torchvision_resnet(source)
    grey = torch.rand(2, 1, 33, 29)
    rgb = F.conv2d(grey.expand(-1, 3, -1, -1), source["conv1.weight"], stride=2, padding=3)
    one = F.conv2d(grey, weights["encoder.conv1.weight"], stride=2, padding=3)
    assert torch.allclose(one, rgb, atol=1e-4)


def test_script_writes_weights_that_load_into_the_fine_tuning_network(tmp_path):
    src, out, rep = tmp_path / "resnet18.pth", tmp_path / "encoder.pt", tmp_path / "report.json"
    torch.save({"state_dict": torchvision_resnet18_state()}, src)  # a wrapped checkpoint is unwrapped
    report = convert_main(["--input", str(src), "--output", str(out), "--report", str(rep)])
    assert len(report["mapped"]) == 102 and json.loads(rep.read_text())["output"] == str(out)
    net = MultiTaskNet(num_classes=4)
    result = load_pretrained(net, str(out))
    assert len(result["matched"]) == 102 and all(k.startswith("encoder.") for k in result["matched"])
    assert torch.equal(net.encoder.conv1.weight, torch.load(out, weights_only=True)["encoder.conv1.weight"])


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="no torchvision ResNet keys"):
        convert_torchvision_resnet({"features.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="no key maps"):
        convert_torchvision_resnet({"conv1.weight": torch.zeros(3, 3, 3, 3)})
    with pytest.raises(SystemExit) as e:
        convert_main(["--input", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "x.pt")])
    assert e.value.code == 2
