"""bundle.inference.writer: a full disk while writing predictions or per-image files is one message naming the
file and the images whose outputs are kept."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bundle.atomic import WriteError
from bundle.errors import set_debug
from bundle.inference.writer import PredictionWriter
from tests.helpers import make_full, small_disk


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    for key in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    set_debug(False)


def row(writer: PredictionWriter, image: str) -> dict:
    return {**dict.fromkeys(writer.fields), "image": image, "status": "ok", "predicted": "a"}


def test_full_disk_stops_with_the_rows_written_before_kept(tmp_path):
    with small_disk(tmp_path / "out", 64) as out:
        writer = PredictionWriter(str(out), ["a", "b"])
        writer._start(None)
        first = [row(writer, "one.png")]
        writer._append(first)
        writer.rows.extend(first)
        make_full(out)
        with pytest.raises(WriteError) as e:
            writer._append([row(writer, f"{i:05d}.png") for i in range(2000)])
        assert str(e.value).startswith(
            f"cannot write the predictions {out / 'predictions.csv'}: the disk is full; the rows and files of the 1 "
            "image before are kept"
        )
        with pytest.raises(WriteError, match=r"cannot write the mask .*a_lung.png: the disk is full"):
            writer._save_map(np.full((64, 64), 255, np.uint8), "masks", "a_lung", "a.png", nifti=False)
        with pytest.raises(WriteError, match=r"cannot write the map .*a_saliency.npy: the disk is full"):
            writer._save_map(np.random.default_rng(0).random((64, 64)), "saliency", "a_saliency", "a.png", False)
        with pytest.raises(WriteError, match=r"cannot write .*predictions.json: the disk is full; nothing was"):
            writer._write_json(None)
        assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))  # no temporary left
        (out / "filler").unlink()
        with open(out / "predictions.csv", newline="") as f:
            assert [r["image"] for r in csv.DictReader(f)][:1] == ["one.png"]  # a torn last row at most


def test_overlay_is_drawn_on_the_source_with_the_prediction_above_it(tmp_path):
    """A 256-px source: the overlay is 512 px wide and keeps the plain radiograph away from the saliency."""
    from PIL import Image

    source = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(source)
    writer = PredictionWriter(str(tmp_path / "out"), ["normal", "covid19"], saliency_method="gradcam")
    r = {**row(writer, str(source)), "lung_attention": 0.5, "lung_share": 0.25}
    saliency = np.zeros((8, 8), np.float32)
    saliency[:2, :2] = 1.0  # the top-left corner
    lung_prob = np.zeros((8, 8), np.float32)
    lung_prob[2:6, 2:6] = 1.0  # contour about 128 px from the picture's edges
    writer._write_files(r, "a", (256, 256), lung_prob, saliency, np.array([0.2, 0.8]))
    picture = np.asarray(Image.open(r["overlay_file"]).convert("RGB")).astype(int)
    assert picture.shape[1] == 512 and picture.shape[0] > 512
    grey = (picture == picture[..., :1]).all(2)  # pixels without colour
    top = int(np.argmax(~grey.all(1)))  # the first row with colour: the radiograph's top, under the caption band
    assert 40 < top < 120 and grey[:top].all()  # the caption above the radiograph, in black and white
    assert not grey[top : top + 60, :60].all()  # coloured by the saliency in the top-left corner
    assert grey[top + 220 : top + 420, 430:].all()  # far from saliency and contour: the plain radiograph
    assert r["lung_mask_file"].endswith("a_lung.png") and r["saliency_file"].endswith("a_saliency.npy")
