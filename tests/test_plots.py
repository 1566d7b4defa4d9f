"""bundle.plots: every picture is written whole through ``atomic_write``, and a full disk is one message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bundle.atomic import WriteError
from bundle.errors import set_debug
from bundle.plots import plot_confusion, save_overlay
from tests.helpers import make_full, small_disk


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    for key in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    set_debug(False)


def test_pictures_are_written_in_the_format_of_their_name(tmp_path):
    path = plot_confusion([[3, 1], [0, 4]], ["a", "b"], str(tmp_path / "sub" / "confusion.png"))
    assert Image.open(path).format == "PNG"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["confusion.png"]


def test_full_disk_names_the_picture_and_leaves_no_temporary(tmp_path):
    with small_disk(tmp_path / "disk", 64) as disk:
        make_full(disk)
        image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
        with pytest.raises(WriteError) as e:
            save_overlay(str(disk / "overlays" / "a_overlay.png"), image, None, None, "text")
        assert str(e.value) == (
            f"cannot write the picture {disk / 'overlays' / 'a_overlay.png'}: the disk is full; nothing was written. "
            f"Free some space on the disk of {disk / 'overlays'}, then rerun"
        )
        assert sorted(p.name for p in (disk / "overlays").iterdir()) == []
