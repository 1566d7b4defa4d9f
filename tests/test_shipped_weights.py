"""models/model.pt, the shipped weights: small enough for git, exactly the default network, metrics recorded."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser

from tests.conftest import ROOT

MODEL = ROOT / "models" / "model.pt"
ZOO_FILE_LIMIT = 25 * 1024 * 1024  # the model zoo keeps larger files out of git (large_files.yml)

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} is absent (make weights)")


def test_fits_the_zoo_limit_and_is_a_float16_state_dict():
    assert MODEL.stat().st_size < ZOO_FILE_LIMIT
    state = torch.load(MODEL, map_location="cpu", weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)


@pytest.mark.parametrize("net_id", ["network_def", "network_def_seg"])
def test_loads_strictly_into_both_default_views(net_id):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(ROOT)
    net = parser.get_parsed_content(net_id)
    result = net.load_state_dict(torch.load(MODEL, map_location="cpu", weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(p.dtype == torch.float32 for p in net.parameters())  # stored as float16, runs in float32


def test_metadata_records_its_test_metrics_as_numbers():
    metrics = json.loads((ROOT / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert {"test_auc_macro", "test_accuracy", "test_lung_dice"} <= set(metrics)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())


def test_carries_its_recipe_and_metadata_agrees():
    from bundle.checkpoints import read_recipe
    from bundle.prepare.labels import MODEL_CLASSES

    recipe = read_recipe(MODEL)
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    io = meta["network_data_format"]
    assert recipe["kind"] == "model" and recipe["multi_label"] is False and recipe["lungs_only"] is False
    assert recipe["class_names"] == list(io["outputs"]["pred"]["channel_def"].values()) == list(MODEL_CLASSES)
    assert io["inputs"]["image"]["spatial_shape"] == [recipe["image_size"]] * 2
    assert f"{recipe['backbone']} backbone" in meta["description"]
    # loadable as the weights are: no code runs, and the weights themselves stay a plain state_dict
    assert json.loads((ROOT / "models" / "model.recipe.json").read_text()) == recipe
