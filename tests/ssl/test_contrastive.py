"""Mechanics of the contrastive methods: losses, MoCo's queue and momentum encoder, BYOL's EMA target, SimSiam's
stop-gradient, and the exported encoder weights."""

from __future__ import annotations

import types

import pytest
import torch
from monai.losses import ContrastiveLoss
from torch import nn

from bundle.checkpoints import load_pretrained
from bundle.networks import MultiTaskNet
from bundle.ssl.base import trainable_parameters
from bundle.ssl.byol import BYOL
from bundle.ssl.heads import mlp
from bundle.ssl.losses import nt_xent_loss
from bundle.ssl.methods import METHODS, build_method
from bundle.ssl.moco import MoCoV2
from bundle.ssl.momentum import ema_update
from bundle.ssl.simclr import SimCLR
from bundle.ssl.simsiam import SimSiam

# resnet10 keeps the tests quick; every method takes the backbone name from the config
SMALL = {"backbone": "resnet10", "proj_dim": 16, "hidden_dim": 32}


def views(batch: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 1, size, size)
    return {"view1": torch.rand(shape, generator=g), "view2": torch.rand(shape, generator=g)}


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def engine_at(iteration: int, epoch_length: int, max_epochs: int):
    """The bits of an ignite engine that the methods read."""
    return types.SimpleNamespace(
        state=types.SimpleNamespace(iteration=iteration, epoch_length=epoch_length, max_epochs=max_epochs)
    )


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_monai(temperature: float) -> None:
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    ours = nt_xent_loss(z1, z2, temperature)
    theirs = ContrastiveLoss(temperature=temperature)(z1, z2)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_nt_xent_is_stable_at_low_temperature() -> None:
    z = torch.randn(4, 8)
    assert torch.isfinite(nt_xent_loss(z, z + 0.01 * torch.randn(4, 8), 0.005))
    assert not torch.isfinite(ContrastiveLoss(temperature=0.005)(z, z))  # why MONAI's is not used
    # perfectly aligned, well separated pairs: loss near zero
    eye = torch.eye(4, 8)
    assert nt_xent_loss(eye, eye, 0.05) < 1e-3


def test_nt_xent_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="two"):
        nt_xent_loss(torch.randn(4, 8), torch.randn(3, 8))


def test_build_method_switches_by_name_and_rejects_unknown() -> None:
    method = build_method("SimCLR", temperature=0.2, queue_size=8, momentum=None, **SMALL)
    assert isinstance(method, SimCLR) and method.temperature == 0.2
    with pytest.raises(ValueError, match="simclr, moco, byol, simsiam"):
        build_method("swav")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_and_exports_the_encoder(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    method = build_method(name, queue_size=16, **SMALL)
    optimizer = torch.optim.SGD(trainable_parameters(method), lr=0.1)
    before = params(method.encoder)
    out = method(views())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["embedding"].shape[0] == 4 and not out["embedding"].requires_grad
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    method.on_step_end(engine_at(1, 10, 1))
    assert any(not torch.equal(a, b) for a, b in zip(before, params(method.encoder))), "the encoder did not learn"

    state = method.export_state()
    assert state and all(k.startswith("encoder.") for k in state)
    net = MultiTaskNet(num_classes=4, backbone="resnet10")
    path = tmp_path / "pretrained.pt"
    torch.save(state, path)
    report = load_pretrained(net, path)
    encoder_keys = [k for k in net.state_dict() if k.startswith("encoder.")]
    assert sorted(report["matched"]) == sorted(encoder_keys)
    assert torch.equal(net.state_dict()["encoder.conv1.weight"], method.encoder.conv1.weight)


def test_moco_queue_advances_and_never_holds_current_positives() -> None:
    torch.manual_seed(0)
    method = MoCoV2(queue_size=10, momentum=0.9, **SMALL)
    optimizer = torch.optim.SGD(trainable_parameters(method), lr=0.5)
    assert not any(p.requires_grad for p in method.momentum_encoder.parameters())
    for step in range(4):  # 4 batches of 4 keys through a queue of 10: the ring wraps around
        batch = views(seed=step)
        queue_before = method.queue.clone()
        out = method(batch)
        keys = method._pending_keys
        assert torch.equal(method.queue, queue_before), "forward must not enqueue: the loss would see its positives"
        assert (method.queue @ keys.T).max() < 0.999, "a current key is already among the negatives"
        # the loss is InfoNCE of each query against its own key and exactly the queue before this step
        q = nn.functional.normalize(method.projector(method.pooled(method.encoder, batch["view1"])), dim=1)
        logits = torch.cat([(q * keys).sum(1, keepdim=True), q @ queue_before.T], 1) / method.temperature
        assert torch.allclose(
            out["loss"], nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long)), atol=1e-5
        )
        optimizer.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in method.momentum_encoder.parameters())
        key_before = params(method.momentum_encoder)
        optimizer.step()
        query_after = params(method.encoder)
        method.on_step_end(None)
        # momentum update: key <- m * key + (1 - m) * query (after the optimiser step)
        for k0, q1, k1 in zip(key_before, query_after, params(method.momentum_encoder)):
            assert torch.allclose(k1, 0.9 * k0 + 0.1 * q1, atol=1e-6)
        # the keys went in at the old pointer, oldest entries first overwritten, pointer advanced by the batch
        slots = [(4 * step + i) % 10 for i in range(4)]
        assert torch.allclose(method.queue[slots], keys)
        assert int(method.queue_ptr) == (4 * step + 4) % 10
    # resume state: the queue and pointer are part of the state_dict
    assert {"queue", "queue_ptr"} <= set(method.state_dict())


def test_moco_enqueue_larger_than_queue_keeps_newest() -> None:
    method = MoCoV2(queue_size=3, **SMALL)
    keys = nn.functional.normalize(torch.randn(5, 16), dim=1)
    method.enqueue(keys)
    assert torch.allclose(method.queue[[0, 1, 2]], keys[2:]) and int(method.queue_ptr) == 0


def test_byol_target_is_ema_of_online_and_gets_no_gradient() -> None:
    torch.manual_seed(0)
    method = BYOL(momentum=0.9, momentum_end=1.0, **SMALL)
    for t, o in zip(method.target_encoder.parameters(), method.encoder.parameters()):
        assert torch.equal(t, o) and not t.requires_grad
    optimizer = torch.optim.SGD(trainable_parameters(method), lr=0.5)
    assert all(p.requires_grad for p in optimizer.param_groups[0]["params"])
    assert not any(p is q for p in optimizer.param_groups[0]["params"] for q in method.target_encoder.parameters())

    target_before = params(method.target_encoder) + params(method.target_projector)
    out = method(views())
    optimizer.zero_grad()
    out["loss"].backward()
    target_params = list(method.target_encoder.parameters()) + list(method.target_projector.parameters())
    assert all(p.grad is None for p in target_params)
    assert all(p.grad is not None for p in method.predictor.parameters()), "the predictor is trained"
    optimizer.step()
    online_after = params(method.encoder) + params(method.projector)
    method.on_step_end(engine_at(iteration=3, epoch_length=10, max_epochs=1))
    tau = method.momentum_at(3, 10)
    assert tau == method.current_momentum and 0.9 < tau < 1.0
    target_after = params(method.target_encoder) + params(method.target_projector)
    for t0, o1, t1 in zip(target_before, online_after, target_after):
        assert torch.allclose(t1, tau * t0 + (1 - tau) * o1, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(target_before, target_after)), "the target moved"


def test_byol_momentum_schedule_rises_from_base_to_end() -> None:
    method = BYOL(momentum=0.99, momentum_end=1.0, **SMALL)
    values = [method.momentum_at(k, 100) for k in range(0, 101, 10)]
    assert values[0] == pytest.approx(0.99) and values[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert method.momentum_at(5, None) == 0.99  # no known length: constant


class ConstantPredictor(nn.Module):
    """Ignores its input: the only path from the loss to the encoder is then the target branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.randn(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(z), -1)


def test_simsiam_target_branch_is_detached() -> None:
    torch.manual_seed(0)
    method = SimSiam(backbone="resnet10", proj_dim=16, hidden_dim=32, pred_hidden_dim=8)
    method.predictor = ConstantPredictor(16)
    method(views())["loss"].backward()
    assert method.predictor.value.grad is not None and method.predictor.value.grad.abs().sum() > 0
    for p in list(method.encoder.parameters()) + list(method.projector.parameters()):
        assert p.grad is None or not p.grad.any(), "gradient reached the encoder through the stop-gradient branch"

    # control: the same loss without the stop-gradient does reach the encoder, so the check above can fail
    method.zero_grad(set_to_none=True)
    b = views()
    z1 = method.projector(method.pooled(method.encoder, b["view1"]))
    z2 = method.projector(method.pooled(method.encoder, b["view2"]))
    p1, p2 = method.predictor(z1), method.predictor(z2)
    cos = nn.functional.cosine_similarity
    (-(cos(p1, z2).mean() + cos(p2, z1).mean()) / 2).backward()
    assert any(p.grad is not None and p.grad.any() for p in method.encoder.parameters())


def test_simclr_views_are_negatives_of_each_other_across_pairs() -> None:
    torch.manual_seed(0)
    method = SimCLR(temperature=0.1, **SMALL).eval()
    same = method({"view1": views()["view1"], "view2": views()["view1"]})["loss"]
    swapped = views()
    different = method(swapped)["loss"]
    assert same < different  # identical views are the easiest positives


def test_ema_update_and_mlp_shapes() -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, 0.75 * wa + 0.25 * wb)
    head = mlp(8, 16, 4, num_layers=3, last_bn=True, last_bn_affine=False)
    assert head(torch.randn(5, 8)).shape == (5, 4)
    with pytest.raises(ValueError):
        mlp(8, 16, 4, num_layers=0)


@pytest.mark.parametrize("cls, twin", [(MoCoV2, "momentum_encoder"), (BYOL, "target_encoder")])
def test_starting_weights_reach_the_momentum_network(cls, twin, tmp_path) -> None:
    """pretrained_ckpt (encoder.* only) must start the key encoder / EMA target too; a resume state keeps its own."""
    donor = MultiTaskNet(num_classes=1, backbone="resnet10")
    torch.save({k: v for k, v in donor.state_dict().items() if k.startswith("encoder.")}, tmp_path / "start.pt")
    method = cls(**SMALL)
    load_pretrained(method, tmp_path / "start.pt")
    for a, b in zip(getattr(method, twin).parameters(), donor.encoder.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        for p in getattr(method, twin).parameters():
            p.add_(1.0)
    full = {k: v.clone() for k, v in method.state_dict().items()}
    fresh = cls(**SMALL)
    fresh.load_state_dict(full)
    for a, b in zip(getattr(fresh, twin).parameters(), getattr(method, twin).parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(getattr(fresh, twin).parameters()), next(fresh.encoder.parameters()))
