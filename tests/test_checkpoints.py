"""Checkpoints: atomic writes, weights-only loads, pretrained transfer with a report."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from bundle.atomic import atomic_save
from bundle.checkpoints import load_pretrained, load_weights
from bundle.networks import MultiTaskNet


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    atomic_save({"a": torch.ones(2)}, path)
    assert torch.equal(load_weights(path)["a"], torch.ones(2))

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        atomic_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_weights(path)["a"], torch.ones(2))  # old file intact
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary left behind


class Custom:
    """An arbitrary picklable object: weights_only loading must refuse it."""


def test_load_weights_refuses_pickled_objects(tmp_path):
    torch.save({"obj": Custom()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        load_weights(tmp_path / "evil.pt")


def test_load_pretrained_reports_matches(tmp_path, caplog):
    source = MultiTaskNet(num_classes=1, seg_channels=1)  # e.g. a reconstruction network
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # DDP prefix is stripped
    atomic_save(state, tmp_path / "p.pt")
    target = MultiTaskNet(num_classes=4)
    with caplog.at_level(logging.INFO):
        report = load_pretrained(target, tmp_path / "p.pt")
    enc = [k for k in target.state_dict() if k.startswith("encoder.")]
    assert set(enc) <= set(report["matched"])
    assert "segmentation_head.conv2d.weight" in report["mismatched"] or any(
        k.startswith("segmentation_head") for k in report["mismatched"]
    )
    assert "classifier.3.weight" in report["mismatched"]
    torch.testing.assert_close(target.state_dict()[enc[0]], source.state_dict()[enc[0]])
    assert "keys matched" in caplog.text and "encoder" in caplog.text


def test_load_pretrained_rejects_unrelated_file(tmp_path):
    atomic_save({"foo.weight": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="no key matches"):
        load_pretrained(MultiTaskNet(num_classes=2), tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_pretrained(MultiTaskNet(num_classes=2), tmp_path / "missing.pt")
