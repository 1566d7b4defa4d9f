"""bundle.evaluation.sanity: cascading randomisation of the shipped model's maps, rank correlation, SSIM, steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from bundle.checkpoints import load_weights
from bundle.evaluation.sanity import (
    cascade_steps,
    cascading_randomization,
    compare_layers,
    compare_methods,
    randomize_,
    rank_correlation,
    structural_similarity,
)
from bundle.evaluation.sanity_report import methods_table, write_cascade
from bundle.networks import MultiTaskNet
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "sample"


def sample_images(n: int, size: int = 224) -> torch.Tensor:
    """The first ``n`` images of data/sample as (n, 1, size, size) floats in [0, 1] (area resize, as the configs)."""
    entries = json.loads((SAMPLE / "datalist.json").read_text())["training"][:n]
    arrays = [np.asarray(Image.open(SAMPLE / e["image"]).convert("L"), dtype=np.float32) / 255 for e in entries]
    x = torch.from_numpy(np.stack(arrays))[:, None]
    return F.interpolate(x, size=(size, size), mode="area")


@pytest.fixture(scope="module")
def shipped() -> MultiTaskNet:
    net = MultiTaskNet(4, "resnet10")
    net.load_state_dict(load_weights(ROOT / "models" / "model.pt"))
    return net.eval()


def test_cascade_steps_top_down_per_backbone():
    steps = cascade_steps(MultiTaskNet(4, "resnet10"))
    assert [s for s, _ in steps] == [
        "classifier",
        "encoder.layer4",
        "encoder.layer3",
        "encoder.layer2",
        "encoder.layer1",
        "stem",
    ]
    assert steps[-1][1] == ["encoder.conv1", "encoder.bn1"]
    eff = [s for s, _ in cascade_steps(MultiTaskNet(4, "efficientnet-b0"))]
    assert eff[:2] == ["classifier", "encoder._blocks.6"] and eff[-2:] == ["encoder._blocks.0", "stem"]
    with pytest.raises(ValueError, match="no 'classifier'"):
        cascade_steps(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("pool", ["mean", "token"])
def test_a_vit_is_randomised_block_by_block_top_down(pool):
    net = MultiTaskNet(4, "vit_s16", vit_pool=pool)
    steps = cascade_steps(net)
    assert [s for s, _ in steps] == ["classifier"] + [f"encoder.vit.blocks.{i}" for i in range(11, -1, -1)] + ["stem"]
    assert steps[1][1] == ["encoder.vit.blocks.11", "encoder.vit.norm"]
    token = ["encoder.vit.cls_token"] if pool == "token" else []
    assert steps[-1][1] == ["encoder.vit.patch_embedding"] + token
    # every encoder parameter is re-drawn by some step, the position table and class token included
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for i, (_, names) in enumerate(steps):
        randomize_(net, names, seed=i)
    kept = {k for k, v in net.state_dict().items() if torch.equal(v, before[k]) and k.startswith("encoder.")}
    # a LayerNorm's reset (weight 1, bias 0) equals a fresh network's values: only a trained network's change
    assert kept and all("norm" in k for k in kept), kept


def test_randomize_changes_only_the_named_modules_reproducibly():
    torch.manual_seed(0)
    net = MultiTaskNet(4, "resnet10")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.random.get_rng_state()
    assert randomize_(net, ["encoder.layer4"], seed=3) > 0
    assert torch.equal(torch.random.get_rng_state(), state), "the global random state must be left as it was"
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("encoder.layer4.") for k in changed)
    again = MultiTaskNet(4, "resnet10")
    again.load_state_dict(before)
    randomize_(again, ["encoder.layer4"], seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())


def test_rank_correlation_and_ssim():
    a = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    reverse = 1 - a
    rho = rank_correlation(a, torch.cat([a[:1], reverse[1:]]))
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0)
    # monotone transforms keep ranks; ties share their average rank; a constant map ranks nothing
    assert float(rank_correlation(a, a**3)[0]) == pytest.approx(1.0)
    steps = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    assert float(rank_correlation(steps, torch.tensor([0.0, 0.1, 0.2, 0.3]).view(1, 1, 2, 2))) == pytest.approx(
        0.894427, abs=1e-5
    )
    assert float(rank_correlation(a[:1], torch.zeros(1, 1, 16, 16))) == 0.0
    ssim = structural_similarity(a, a)
    assert ssim.shape == (2,) and torch.allclose(ssim, torch.ones(2, dtype=ssim.dtype), atol=1e-5)
    assert float(structural_similarity(a, reverse).max()) < 0.5


def test_fully_randomised_maps_differ_from_the_trained_model(shipped, tmp_path):
    images = sample_images(4)
    before = {k: v.clone() for k, v in shipped.state_dict().items()}
    lines: list[str] = []
    result = cascading_randomization(shipped, images, "gradcampp", None, seed=0, batch_size=4, log=lines.append)
    steps = result["steps"]
    assert len(steps) == 7 and len(lines) == 7  # control + classifier, 4 stages, stem; a log line each
    assert steps[0]["spearman_mean"] == pytest.approx(1.0) and steps[0]["ssim_mean"] == pytest.approx(1.0, abs=1e-5)
    assert steps[-1]["spearman_mean"] < 0.5, "the maps of a random network must not rank pixels like the trained one"
    assert result["worst_random"] < steps[0]["spearman_mean"] - 0.5
    assert result["passed"] and result["saliency_layer"] == "encoder.layer3+encoder.layer4"
    assert all(torch.equal(v, before[k]) for k, v in shipped.state_dict().items()), "the model must be left as it was"
    paths = write_cascade(result, str(tmp_path))
    assert [p.rsplit(".", 1)[1] for p in paths] == ["json", "md", "png"]
    assert json.loads((tmp_path / "saliency_check.json").read_text())["steps"][1]["step"] == "classifier"
    assert "| 6 | + encoder.conv1, encoder.bn1 |" in (tmp_path / "saliency_check.md").read_text()


def test_compare_layers_rows(shipped):
    images = sample_images(2, size=64)
    masks = torch.zeros(2, 1, 64, 64)
    masks[..., 8:56, 8:56] = 1
    result = compare_layers(
        shipped, images, masks, ["encoder.layer4", "encoder.layer3+encoder.layer4"], batch_size=2, timing_images=2,
        repeats=1, log=lambda _: None,
    )  # fmt: skip
    rows = {r["layer"]: r for r in result["rows"]}
    assert rows["encoder.layer4"]["cells"] == 2 and rows["encoder.layer3+encoder.layer4"]["cells"] == 4
    for r in rows.values():
        assert r["ms_per_image"] > 0 and r["lung_ratio_mean"] > 0 and -1 <= r["spearman_random"] <= 1


def test_compare_methods_on_a_vit():
    torch.manual_seed(0)
    net = MultiTaskNet(4, "vit_s16").eval()
    images = sample_images(1, size=64)
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., 8:56, 8:56] = 1
    result = compare_methods(
        net, images, masks, ["attention_gradient"], batch_size=1, timing_images=1, repeats=1, log=lambda _: None
    )
    (row,) = result["rows"]
    assert row["method"] == "attention_gradient" and row["layer"] == "encoder.vit.blocks (attention)"
    assert row["cells"] == 4 and row["ms_per_image"] > 0 and row["lung_ratio_mean"] > 0
    assert len(row["spearman_steps"]) == 15 and row["spearman_steps"][0] == pytest.approx(1.0)
    assert row["spearman_worst_random"] == max(row["spearman_steps"][2:])
    assert "| attention_gradient | `encoder.vit.blocks (attention)` | 4x4 |" in methods_table(result)
