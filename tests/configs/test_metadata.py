"""configs/metadata.json: valid against MONAI's schema, pinned exactly as the project installs, consistent."""

from __future__ import annotations

import json
import re

import pytest

from bundle.workflow import parsed
from tests.conftest import ROOT, SHARED_SCHEMA
from tests.helpers import bundle_in_process

META = json.loads((ROOT / "configs" / "metadata.json").read_text())
# the values each config runs with by default: the shipped model's recipe for inference, the defaults for train
CONFIGS = {
    name: dict(zip(KEYS, parsed(name, None, *KEYS)))
    for KEYS in [("class_names", "image_size")]
    for name in ("inference", "train")
}
IO = META["network_data_format"]
# MONAI's verify_net_in_out always compares a net's output with outputs#pred; the segmentation view is checked
# against the "lung" entry by overriding that number on the command line.
SEG_OUTPUT = "lung"
SEG_OVERRIDE = [
    "--_meta_#network_data_format#outputs#pred#num_channels",
    str(IO["outputs"][SEG_OUTPUT]["num_channels"]),
]


@pytest.mark.skipif(not SHARED_SCHEMA.is_file(), reason=f"MONAI schema copy not found at {SHARED_SCHEMA}")
def test_verify_metadata_against_schema_20240725():
    proc = bundle_in_process(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SHARED_SCHEMA)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_pins_are_exact_and_match_requirements():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", (ROOT / "requirements.txt").read_text(), re.M))
    assert pins["monai"] == META["monai_version"]
    assert pins["torch"] == META["pytorch_version"]
    assert pins["numpy"] == META["numpy_version"]
    for name, version in META["required_packages_version"].items():
        assert pins.get(name) == version, name


def test_changelog_holds_version_and_first_entry_is_current():
    import bundle

    assert META["version"] in META["changelog"] and bundle.__version__ == META["version"]
    assert next(iter(META["changelog"])) == META["version"]


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_classes_and_input_match_configs(config):
    cfg = CONFIGS[config]
    pred = IO["outputs"]["pred"]
    assert list(pred["channel_def"].values()) == cfg["class_names"]
    assert pred["num_channels"] == len(cfg["class_names"])
    image = IO["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [cfg["image_size"]] * 2


@pytest.mark.parametrize(
    "net_id, override", [("network_def", []), ("network_def_seg", SEG_OVERRIDE)], ids=["classification", "segmentation"]
)
def test_verify_net_in_out_cli(net_id, override):
    proc = bundle_in_process(
        "verify_net_in_out",
        "--net_id",
        net_id,
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
        *override,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_seg_output_entry_matches_network_def_seg():
    import torch
    from monai.bundle import ConfigParser

    seg = IO["outputs"][SEG_OUTPUT]
    assert seg["format"] == "segmentation" and seg["channel_def"] == {"0": "background", "1": "lung"}
    assert len(seg["channel_def"]) == seg["num_channels"]
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def_seg").eval()
    image = IO["inputs"]["image"]
    with torch.no_grad():
        out = net(torch.rand(1, image["num_channels"], *image["spatial_shape"]))
    assert out.shape[1] == seg["num_channels"]
    assert list(out.shape[2:]) == seg["spatial_shape"]
    assert out.dtype == getattr(torch, seg["dtype"])
