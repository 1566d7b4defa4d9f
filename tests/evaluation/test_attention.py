"""LungAttentionReport: lung attention against its chance level (the lung share), the ratio and the flag."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import bundle.evaluation.attention as attention_module
from bundle.evaluation.attention import DETAILS, LungAttentionReport, distribution
from bundle.plots import attention_caption, overlay_caption
from tests.evaluation.cases import run_engine

NAMES = ["normal", "pneumonia", "covid19"]
S = 8


def known_batch() -> dict:
    """Five images with a ground-truth mask over the top quarter (share 0.25) and maps of known attention.

    0: all mass in the lungs (attention 1, ratio 4); 1: uniform (0.25, ratio 1, not flagged); 2: all mass below
    (0, flagged); 3: all-zero map (undefined); 4: half the mass inside (0.5, ratio 2).
    True labels 0, 0, 1, 2, 1; predicted (logits) 0, 1, 1, 2, 2.
    """
    mask = torch.zeros(5, 1, S, S)
    mask[:, :, :2] = 1
    sal = torch.zeros(5, 1, S, S)
    sal[0, :, :2] = 1
    sal[1] = 1
    sal[2, :, 4:] = 1
    sal[4, :, 1:3] = 1  # rows 1 (lung) and 2 (not): half inside
    logits = torch.full((5, 3), -5.0)
    for i, k in enumerate([0, 1, 1, 2, 2]):
        logits[i, k] = 5.0
    return {
        "image": torch.rand(5, 1, S, S),
        "label": torch.tensor([0, 0, 1, 2, 1]),
        "mask": mask,
        "has_mask": torch.ones(5, dtype=torch.long),
        "image_path": [f"img_{i}.png" for i in range(5)],
        "logits": logits,
        "seg": torch.zeros(5, 2, S, S),
        "saliency": sal,
    }


def test_per_image_values_and_summary_against_chance():
    report = LungAttentionReport("/unused", NAMES, n_overlays=0, saliency_method="gradcam")
    engine = run_engine([known_batch()], len(NAMES), False, handlers=[report])
    details = engine.state.metric_details
    assert set(details) == set(DETAILS) and all(details[k].shape == (5, 1) for k in DETAILS)
    np.testing.assert_allclose(details["lung_share"][:, 0].numpy(), 0.25)
    att, ratio, flag = (details[k][:, 0].numpy() for k in ("lung_attention", "lung_attention_ratio", DETAILS[3]))
    np.testing.assert_allclose(att[[0, 1, 2, 4]], [1.0, 0.25, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(ratio[[0, 1, 2, 4]], [4.0, 1.0, 0.0, 2.0], atol=1e-5)
    assert math.isnan(att[3]) and math.isnan(ratio[3]) and math.isnan(flag[3])
    assert flag[[0, 1, 2, 4]].tolist() == [0.0, 0.0, 1.0, 0.0]  # ratio exactly 1 is chance, not "outside"

    block = report.summary()["lung_attention"]
    assert block["num_images"] == 4 and block["num_undefined"] == 1 and block["mean"] == pytest.approx(1.75 / 4)
    assert block["lung_share"]["mean"] == pytest.approx(0.25) and block["lung_share"]["num_images"] == 4
    r = block["lung_attention_ratio"]
    assert r["mean"] == pytest.approx(7 / 4, abs=1e-5) and r["median"] == pytest.approx(1.5, abs=1e-5)
    assert r["histogram"]["bin_edges"][-1] == 3.0 and sum(r["histogram"]["counts"]) == 3
    assert r["histogram"]["above_range"] == 1  # ratio 4
    flagged = block["attention_outside_lungs"]
    assert (flagged["images"], flagged["flagged"], flagged["share"]) == (4, 1, 0.25)
    # true classes: normal = images 0, 1; pneumonia = 2 (4 is too); covid19 = 3 (undefined): no defined image
    assert flagged["per_true_class"]["normal"] == {"images": 2, "flagged": 0, "share": 0.0}
    assert flagged["per_true_class"]["pneumonia"] == {"images": 2, "flagged": 1, "share": 0.5}
    assert flagged["per_true_class"]["covid19"] == {"images": 0, "flagged": 0, "share": None}
    # predicted: normal = 0; pneumonia = 1, 2; covid19 = 3 (undefined), 4
    assert flagged["per_predicted_class"]["pneumonia"] == {"images": 2, "flagged": 1, "share": 0.5}
    assert flagged["per_predicted_class"]["covid19"]["share"] == 0.0


def test_without_labels_no_per_true_class():
    batch = known_batch()
    batch["label"] = torch.full((5,), -1)
    report = LungAttentionReport("/unused", NAMES)
    run_engine([batch], len(NAMES), False, handlers=[report])
    flagged = report.summary()["lung_attention"]["attention_outside_lungs"]
    assert flagged["per_true_class"] is None and flagged["per_predicted_class"]["normal"]["images"] == 1


def test_multi_label_true_classes_count_every_positive():
    batch = known_batch()
    batch["label"] = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    report = LungAttentionReport("/unused", NAMES, multi_label=True)
    run_engine([batch], len(NAMES), True, handlers=[report])
    per_true = report.summary()["lung_attention"]["attention_outside_lungs"]["per_true_class"]
    assert per_true["pneumonia"] == {"images": 2, "flagged": 1, "share": 0.5}  # images 1 and 2
    assert per_true["covid19"] == {"images": 1, "flagged": 1, "share": 1.0}  # image 2 (3 is undefined)


def test_gather_merges_every_list_in_rank_order(monkeypatch):
    """Under DDP each rank holds its share; the merged lists must stay aligned image by image."""
    report = LungAttentionReport("/unused", NAMES)
    run_engine([known_batch()], len(NAMES), False, handlers=[report])
    mine = (report.values, report.shares, report.ratios, report.classes, report.labels, report.gt)
    other = tuple(list(reversed(x)) for x in mine)
    monkeypatch.setattr(attention_module, "gather_objects", lambda value: [value, other])
    report._gather()
    assert len(report.values) == len(report.labels) == len(report.shares) == len(report.flags) == 10
    assert report.labels[5:] == list(reversed(report.labels[:5])) and report.classes[5] == 2
    assert report.summary()["lung_attention"]["attention_outside_lungs"]["flagged"] == 2


def test_distribution_and_caption():
    d = distribution([0.1, 0.3, float("nan"), 0.5])
    assert d["num_images"] == 3 and d["mean"] == pytest.approx(0.3) and sum(d["histogram"]["counts"]) == 3
    assert "above_range" not in d["histogram"]
    assert math.isnan(distribution([])["mean"])
    assert attention_caption(0.46, 0.29) == "lung attention 0.46, chance (lung share) 0.29: 1.59x"
    assert (
        attention_caption(0.2, 0.29) == "lung attention 0.20, chance (lung share) 0.29: 0.69x\nmostly outside the lungs"
    )
    assert attention_caption(float("nan"), 0.3) == "" and attention_caption(None, None) == ""
    assert attention_caption(0.5, None) == "lung attention 0.50"
    assert attention_caption(0.0, 0.0) == "lung attention 0.00 (no lung in the mask)"


def test_overlays_are_drawn_on_the_source_radiograph_with_true_and_predicted_class(tmp_path, monkeypatch, caplog):
    """Sources of 300 x 200 pixels (not the network's square): the maps are resized onto them, the captions carry
    the true class; a source that cannot be read again is drawn at the network's size, with a warning."""
    batch = known_batch()
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"img_{i}.png" for i in range(5)]
    for p in paths[:1] + paths[2:]:
        Image.fromarray(rng.integers(0, 255, (300, 200), dtype=np.uint8)).save(p)
    batch["image_path"] = [str(p) for p in paths]  # img_1.png is missing
    drawn = {}
    real = attention_module.save_overlay

    def record(path, image, saliency, mask, text, **kwargs):
        drawn[os.path.basename(path)] = (image.shape, saliency.shape, mask is not None, text)
        return real(path, image, saliency, mask, text, **kwargs)

    monkeypatch.setattr(attention_module, "save_overlay", record)
    report = LungAttentionReport(str(tmp_path / "eval"), NAMES, n_overlays=2, saliency_method="gradcam")
    run_engine([batch], len(NAMES), False, handlers=[report])
    assert len(drawn) == 4 and sorted(os.listdir(tmp_path / "eval" / "overlays")) == sorted(drawn)
    most = drawn["most_confident_01_img_0.png"]  # true normal, predicted normal
    assert most[:3] == ((300, 200), (S, S), True)
    assert most[3].splitlines()[:2] == ["true: normal", f"predicted: normal (probability {most_prob():.2f})"]
    # equal confidences: the first two images are both the most and the least confident
    missing = drawn["least_confident_02_img_1.png"]  # true normal, predicted pneumonia
    assert missing[3].splitlines()[1].endswith(", wrong")
    assert missing[0] == (S, S) and "drawn at the network's input size" in caplog.text
    picture = Image.open(tmp_path / "eval" / "overlays" / "most_confident_01_img_0.png")
    assert picture.size[0] == 512 and picture.size[1] > 600  # a 512 x 341 radiograph, caption and colour bar bands


def most_prob() -> float:
    """The top probability of known_batch's logits (5 for the class, -5 for the two others)."""
    return float(torch.softmax(torch.tensor([5.0, -5.0, -5.0]), 0)[0])


def test_true_class_of_an_overlay_caption():
    single, multi = LungAttentionReport("/unused", NAMES), LungAttentionReport("/unused", NAMES, multi_label=True)
    assert single._true_class(2) == "covid19" and single._true_class(-1) is None
    assert multi._true_class([1.0, 0.0, 1.0]) == "normal, covid19" and multi._true_class([0, 0, 0]) == "no finding"
    assert multi._true_class([-1.0, -1.0, -1.0]) is None
    assert "wrong" not in overlay_caption("normal", 0.8, None, None, "normal, covid19", mark_wrong=False)
