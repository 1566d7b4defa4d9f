"""bundle.atomic: a write either lands whole or leaves the previous file and no temporary behind."""

from __future__ import annotations

import json

import pytest
import torch

from bundle.atomic import atomic_save, atomic_write, atomic_write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json({"epoch": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write('{"epoch": 2')  # torn content, then a crash
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_atomic_save_round_trips_with_weights_only(tmp_path):
    state = {"w": torch.arange(3.0)}
    atomic_save(state, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["w"], state["w"])
