"""Shared pretraining engine pieces: batch preparation, hooks, the monitor (loss, lr, spread, collapse, kNN probe)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from bundle.engines.pretraining import MethodHooks, SSLPrepareBatch, ssl_loss
from bundle.engines.user_errors import UserErrorPassThrough
from bundle.errors import UserError
from bundle.ssl.base import PretrainingMethod, trainable_parameters
from bundle.ssl.monitor import PretrainMonitor, encode_pooled, knn_accuracy
from tests.helpers import make_full, small_disk


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


class Recorder(PretrainingMethod):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = TinyEncoder()
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.events: list[tuple] = []

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        self.events.append(("epoch", epoch, max_epochs))

    def on_step_end(self, engine: Engine) -> None:
        self.events.append(("step", engine.state.iteration))


def run_engine(outputs, max_epochs: int = 1, handlers=()) -> Engine:
    """An ignite engine whose iterations emit ``outputs`` (a callable of the iteration number)."""
    engine = Engine(lambda e, batch: outputs(e.state.iteration))
    for h in handlers:
        h.attach(engine)
    engine.run(range(3), max_epochs=max_epochs)
    return engine


def test_prepare_batch_and_loss() -> None:
    batch = {"view1": torch.ones(2, 1, 4, 4), "view2": torch.zeros(2, 1, 4, 4), "index": torch.arange(2), "name": "x"}
    prepared, target = SSLPrepareBatch(keys=["view1", "view2"])(batch, device="cpu")
    assert set(prepared) == {"view1", "view2"} and target is None
    assert set(SSLPrepareBatch()(batch)[0]) == {"view1", "view2", "index"}
    assert ssl_loss({"loss": torch.tensor(2.0)}) == 2.0


def test_method_hooks_and_trainable_parameters() -> None:
    method = Recorder()
    run_engine(lambda i: {"loss": torch.tensor(1.0)}, max_epochs=2, handlers=[MethodHooks(method)])
    assert method.events[0] == ("epoch", 0, 2) and ("epoch", 1, 2) in method.events
    assert [e for e in method.events if e[0] == "step"][-1] == ("step", 6)
    assert all(p.requires_grad for p in trainable_parameters(method))
    assert len(trainable_parameters(method)) == 2  # conv weight and bias; the frozen Linear is left out
    assert set(method.export_state()) == {"encoder.conv.weight", "encoder.conv.bias"}


def test_knn_accuracy() -> None:
    centres = torch.eye(3, 8)
    train = torch.nn.functional.normalize(centres.repeat(4, 1) + 0.05 * torch.randn(12, 8), dim=1)
    labels = torch.arange(3).repeat(4)
    val = torch.nn.functional.normalize(centres + 0.05 * torch.randn(3, 8), dim=1)
    assert knn_accuracy(train, labels, val, torch.arange(3), k=3) == 1.0
    # unlabelled images (-1) are ignored on both sides; none labelled: NaN
    partly = labels.clone()
    partly[:3] = -1
    assert knn_accuracy(train, partly, val, torch.tensor([0, -1, 2]), k=3) == 1.0
    assert math.isnan(knn_accuracy(train, torch.full((12,), -1), val, torch.arange(3)))
    assert math.isnan(knn_accuracy(train, labels, val, torch.full((3,), -1)))
    # multi-label: each class voted separately
    multi = torch.nn.functional.one_hot(labels, 3).float()
    assert knn_accuracy(train, multi, val, torch.eye(3), k=3) == 1.0


def test_encode_pooled_handles_an_empty_split() -> None:
    feats, labels = encode_pooled(TinyEncoder(), [], "cpu")
    assert len(feats) == 0 and len(labels) == 0


def test_monitor_logs_each_epoch_probes_and_warns_on_collapse(tmp_path: Path, caplog) -> None:
    method = Recorder()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.25)
    images = torch.rand(6, 1, 4, 4)
    probe = [
        [{"image": images[:3], "label": torch.tensor([0, 1, -1])}],
        [{"image": images[3:], "label": torch.tensor([0, 1, 1])}],
    ]
    monitor = PretrainMonitor(method, optimizer, probe_loaders=probe, probe_interval=2, log_dir=str(tmp_path / "tb"))

    def spread(i):
        return {"loss": torch.tensor(float(i), requires_grad=True), "pred": {"embedding": torch.randn(4, 16)}}

    with caplog.at_level(logging.INFO, logger="bundle.ssl.monitor"):
        run_engine(spread, max_epochs=3, handlers=[monitor])
    rows = monitor.history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == pytest.approx(2.0) and rows[0]["lr"] == 0.25
    assert rows[0]["embedding_std"] > 0.1
    assert "knn_accuracy" not in rows[0] and "knn_accuracy" in rows[1] and "knn_accuracy" in rows[2]  # every 2 + last
    assert "epoch 1/3: loss 2" in caplog.text and "collapsing" not in caplog.text
    assert list((tmp_path / "tb").glob("events.out.tfevents*")), "no TensorBoard log written"

    def collapsed(i):
        return {"loss": torch.tensor(0.0), "pred": {"embedding": torch.ones(4, 16)}}

    with caplog.at_level(logging.WARNING, logger="bundle.ssl.monitor"):
        run_engine(collapsed, handlers=[PretrainMonitor(method, optimizer, probe_interval=0)])
    assert "embeddings are collapsing" in caplog.text


def test_monitor_puts_each_epochs_values_into_the_trainers_metrics() -> None:
    method = Recorder()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.25)
    images = torch.rand(6, 1, 4, 4)
    probe = [
        [{"image": images[:3], "label": torch.tensor([0, 1, 1])}],
        [{"image": images[3:], "label": torch.tensor([0, 1, 1])}],
    ]
    seen: list[dict] = []

    class Reader:  # listed after the monitor, as MONAI's MLFlowHandler is under --tracking mlflow
        def attach(self, engine: Engine) -> None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))

    def spread(i):
        return {"loss": torch.tensor(float(i)), "pred": {"embedding": torch.randn(4, 16)}}

    monitor = PretrainMonitor(method, optimizer, probe_loaders=probe, probe_interval=2)
    run_engine(spread, max_epochs=4, handlers=[monitor, Reader()])
    # the probe runs every 2 epochs and after the last: epoch 3 has no kNN accuracy, not epoch 2's
    assert [sorted(m) for m in seen] == [
        ["embedding_std", "epoch_loss"],
        ["embedding_std", "epoch_loss", "knn_accuracy"],
        ["embedding_std", "epoch_loss"],
        ["embedding_std", "epoch_loss", "knn_accuracy"],
    ]
    assert [m["epoch_loss"] for m in seen] == pytest.approx([2.0, 5.0, 8.0, 11.0])  # iterations 1-3, 4-6, ...
    assert seen[1]["knn_accuracy"] == monitor.history[1]["knn_accuracy"]


def test_full_disk_under_the_tensorboard_log_is_one_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CXR_DEBUG", raising=False)
    method = Recorder()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.25)
    with small_disk(tmp_path / "tb", 64) as disk:
        monitor = PretrainMonitor(method, optimizer, probe_interval=0, log_dir=str(disk))
        make_full(disk)

        def spread(i):
            return {"loss": torch.tensor(float(i), requires_grad=True), "pred": {"embedding": torch.randn(4, 16)}}

        engine = Engine(lambda e, batch: spread(e.state.iteration))
        UserErrorPassThrough().attach(engine)
        monitor.attach(engine)
        with pytest.raises(UserError) as e:
            engine.run(range(3), max_epochs=2)
        assert str(e.value).startswith(f"cannot write the TensorBoard log {disk}/events.out.tfevents.")
        assert "the disk is full; the epochs logged before are kept" in str(e.value)
