"""The TensorRT comparison's mechanics on any machine: what stops it, and the whole measurement run with
inference.json standing in for the overlay (the same passes and the same runs, so no speed-up and no difference)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import tensorrt


def test_the_blockers_name_what_is_missing(tmp_path):
    missing = tensorrt.workflow.CONFIGS / "no_such_overlay.json"
    reasons = tensorrt.blockers(missing)
    assert reasons[0] == "configs/no_such_overlay.json missing"
    if not torch.cuda.is_available():
        assert len(reasons) == 2 and "needs a CUDA GPU, and torch sees none here" in reasons[1]
    assert tensorrt.blockers() == reasons[1:]  # the shipped overlay is there


@pytest.mark.slow  # two inference runs as commands and the timed passes at 224 px (about a minute)
def test_the_measurement_finds_no_difference_between_equal_configs(tmp_path):
    result, peak = tensorrt.measure(tmp_path, batch_size=1, warmup=0, iters=2, images=2, timeout=600,
                                    candidate=tensorrt.REFERENCE)  # fmt: skip
    assert set(result["images_per_s"]) == {"reference", "overlay"} and all(
        v > 0 for v in result["images_per_s"].values()
    )
    assert result["speed_up"] == pytest.approx(
        result["median_batch_s"]["reference"] / result["median_batch_s"]["overlay"]
    )
    assert result["images_compared"] == 2 and result["images_not_compared"] == 0
    assert result["max_abs_prob_diff"] == 0.0 and result["mask_pixels_differing"] == 0.0 and peak > 0
    assert all(s > 0 for s in result["run_s"].values()) and all(s > 0 for s in result["first_batch_s"].values())

    # a changed probability and changed mask pixels are found, on the run's own files
    changed = tmp_path / "changed"
    shutil.copytree(tmp_path / "overlay", changed)
    rows = json.loads((changed / "predictions.json").read_text())
    rows[0]["prob_normal"] += 0.25
    mask_file = rows[1]["lung_mask_file"].replace(str(tmp_path / "overlay"), str(changed))
    rows[1]["lung_mask_file"] = mask_file
    mask = np.asarray(Image.open(mask_file)).copy()
    mask[:10, :10] = 255 - mask[:10, :10]
    Image.fromarray(mask).save(mask_file)
    (changed / "predictions.json").write_text(json.dumps(rows))
    diff = tensorrt.compare_outputs(tmp_path / "reference", changed)
    assert diff["max_abs_prob_diff"] == pytest.approx(0.25)
    total = sum(np.asarray(Image.open(r["lung_mask_file"])).size for r in rows)
    assert diff["mask_pixels_differing"] == pytest.approx(100 / total)
