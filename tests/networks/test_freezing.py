"""bundle.networks.freezing: the linear probe's frozen encoder, alone and as configs/train.json wires it."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from torch import nn

from bundle.errors import UserError
from bundle.networks import MultiTaskNet
from bundle.networks.freezing import freeze_encoder, trainable_parameters
from tests.conftest import ROOT


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BN running mean / var / batch count) of ``module``, copied."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_step(network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One step as SupervisedTrainer takes it: ``network.train()`` first, then forward, backward, step."""
    network.train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 32, 32, generator=g) * 3 + 1  # far from BN's initial statistics, so they would move
    out = network(x)
    loss = nn.functional.cross_entropy(out["class"], torch.tensor([0, 1, 2, 3])) + out["seg"].square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_encoder_keeps_weights_and_bn_statistics_while_the_heads_train(frozen):
    torch.manual_seed(0)
    network = MultiTaskNet(num_classes=4, backbone="resnet10")
    params = trainable_parameters(network, frozen)
    optimizer = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)  # decay would move even gradient-free weights
    before = {name: _snapshot(getattr(network, name)) for name in ("encoder", "classifier", "decoder")}
    _train_step(network, optimizer)
    changed = {
        name: any(not torch.equal(v, getattr(network, name).state_dict()[k]) for k, v in state.items())
        for name, state in before.items()
    }
    assert changed == {"encoder": not frozen, "classifier": True, "decoder": True}
    encoder_ids = {id(p) for p in network.encoder.parameters()}
    assert any(id(p) in encoder_ids for p in params) == (not frozen)  # not in the optimiser when frozen
    assert all(p.requires_grad != frozen for p in network.encoder.parameters())
    assert network.training and network.classifier.training
    assert network.encoder.training == (not frozen)
    assert all(m.training == (not frozen) for m in network.encoder.modules() if isinstance(m, nn.BatchNorm2d))


def test_frozen_encoder_survives_train_eval_cycles_and_state_dict_round_trips():
    network = freeze_encoder(MultiTaskNet(num_classes=2, backbone="resnet10"))
    network.eval()
    network.train()
    assert not network.encoder.training and network.decoder.training
    copy = MultiTaskNet(num_classes=2, backbone="resnet10")
    copy.load_state_dict(network.state_dict())  # same layout: the frozen network saves a plain state_dict


def test_a_ddp_wrapped_network_is_refused_with_the_setting_named():
    wrapped = nn.DataParallel(MultiTaskNet(num_classes=2, backbone="resnet10"))
    with pytest.raises(UserError, match="freeze_encoder"):
        trainable_parameters(wrapped, True)


def test_train_config_freezes_through_the_optimiser():
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser.update({"bundle_root": str(ROOT), "freeze_encoder": True, "device": "cpu", "channels_last": False})
    optimizer = parser.get_parsed_content("optimizer")
    network = parser.get_parsed_content("network")
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained and not trained & {id(p) for p in network.encoder.parameters()}
    assert trained >= {id(p) for p in network.classifier.parameters()} | {id(p) for p in network.decoder.parameters()}
