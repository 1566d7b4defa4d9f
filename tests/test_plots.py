"""bundle.plots: every picture is written whole through ``atomic_write``, and a full disk is one message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bundle.atomic import WriteError
from bundle.errors import set_debug
from bundle.plots import (
    best_epoch,
    confusion_shares,
    heat_rgba,
    overlay_caption,
    overlay_shape,
    plot_confusion,
    plot_training_curves,
    save_overlay,
)
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


def grey_overlay(tmp_path, saliency, mask=None, shape=(256, 256), text="true: a\npredicted: b (probability 0.90)"):
    """An overlay of a uniform radiograph of value 0.4 (grey 102); the picture as an (rows, cols, 3) array and the
    rows of the picture that hold the radiograph (found where its left edge, far from any saliency, is grey)."""
    path = save_overlay(str(tmp_path / "o.png"), np.full(shape, 0.4, np.float32), saliency, mask, text)
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    edge = picture[:, 0]
    rows = np.flatnonzero((edge == 102).all(1))
    return picture, rows


def test_overlay_is_upscaled_with_the_caption_and_colour_bar_outside_the_radiograph(tmp_path):
    saliency = np.zeros((16, 16), np.float32)
    saliency[12:, 12:] = 1.0  # bottom-right corner only
    picture, rows = grey_overlay(tmp_path, saliency)
    assert picture.shape[1] == 512 and rows.size == 512  # a 256-px source drawn at 512 px
    assert np.all(np.diff(rows) == 1)  # one block of rows, with bands above and below it
    assert rows[0] > 40 and picture.shape[0] - rows[-1] > 40
    image = picture[rows[0] : rows[-1] + 1]
    assert (image[:300, :300] == 102).all()  # far from the saliency: the plain grey radiograph, no caption on it
    corner = image[-20:, -40:-20]
    assert (corner != 102).any() and (corner[..., 0] != corner[..., 2]).any()  # coloured where the map is 1
    band = picture[: rows[0]]
    assert (band < 80).any() and (band == 255).mean() > 0.8  # dark text on white above the radiograph


def test_zero_saliency_leaves_the_radiograph_untouched(tmp_path):
    picture, rows = grey_overlay(tmp_path, np.full((8, 8), 0.1, np.float32), text="")
    assert rows.size == 512 and (picture[rows[0] : rows[-1] + 1] == 102).all()  # below the threshold: clear


def test_heat_map_is_clear_below_the_threshold_and_rises_with_the_value():
    rgba = heat_rgba(np.array([[0.0, 0.1, 0.15, 0.5, 1.0]]), threshold=0.15, alpha=0.75)
    alpha = rgba[0, :, 3]
    assert alpha[:3].tolist() == [0.0, 0.0, 0.0] and 0 < alpha[3] < alpha[4] == pytest.approx(0.75)


def test_overlay_shape_keeps_the_aspect_ratio_within_bounds():
    assert overlay_shape((256, 256)) == (512, 512)
    assert overlay_shape((200, 100)) == (512, 256)
    assert overlay_shape((700, 600)) == (700, 600)
    assert overlay_shape((3000, 2500)) == (1024, 853)


def test_overlay_caption_names_true_and_predicted_class_and_the_chance_level():
    text = overlay_caption("viral_pneumonia", 0.62, 0.2, 0.29, true_class="bacterial_pneumonia")
    assert text.splitlines() == [
        "true: bacterial_pneumonia",
        "predicted: viral_pneumonia (probability 0.62), wrong",
        "lung attention 0.20, chance (lung share) 0.29: 0.69x",
        "mostly outside the lungs",
    ]
    assert overlay_caption("normal", 0.9, None, None) == "predicted: normal (probability 0.90)"
    assert "wrong" not in overlay_caption("normal", 0.9, 0.5, 0.25, true_class="normal")


def test_confusion_matrix_shares_are_per_true_class(tmp_path):
    shares = confusion_shares([[3, 1], [0, 0], [2, 6]])[:, :2]
    np.testing.assert_allclose(shares[0], [0.75, 0.25])
    assert np.isnan(shares[1]).all()  # a class without images
    np.testing.assert_allclose(shares[2], [0.25, 0.75])
    names = ["normal", "bacterial_pneumonia", "viral_pneumonia"]
    path = plot_confusion([[3, 1, 0], [0, 0, 0], [2, 5, 1]], names, str(tmp_path / "confusion.png"))
    picture = Image.open(path)
    assert picture.format == "PNG" and picture.size[0] > 600


def test_training_curves_mark_the_first_best_epoch(tmp_path):
    nan = float("nan")
    rows = [
        {"epoch": 1, "train_loss": 2.0, "val_auc": 0.7, "val_accuracy": 0.5, "val_dice": 0.6},
        {"epoch": 2, "train_loss": 1.5, "val_auc": nan, "val_accuracy": nan, "val_dice": nan},
        {"epoch": 3, "train_loss": 1.2, "val_auc": 0.9, "val_accuracy": 0.6, "val_dice": 0.7},
        {"epoch": 4, "train_loss": 1.1, "val_auc": 0.9, "val_accuracy": 0.7, "val_dice": 0.8},
    ]
    assert best_epoch(rows, "val_auc") == 3 and best_epoch(rows[1:2], "val_auc") is None
    assert Image.open(plot_training_curves(rows, tmp_path / "curves.png")).format == "PNG"
