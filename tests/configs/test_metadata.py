"""configs/metadata.json: valid against MONAI's schema, pinned exactly as the project installs, consistent."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, SHARED_SCHEMA, run_bundle

META = json.loads((ROOT / "configs" / "metadata.json").read_text())


@pytest.mark.skipif(not SHARED_SCHEMA.is_file(), reason=f"MONAI schema copy not found at {SHARED_SCHEMA}")
def test_verify_metadata_against_schema_20240725():
    proc = run_bundle(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SHARED_SCHEMA), check=False
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


def test_changelog_holds_version_and_classes_match_configs():
    import bundle

    assert META["version"] in META["changelog"] and bundle.__version__ == META["version"]
    common = json.loads((ROOT / "configs" / "common.json").read_text())
    pred = META["network_data_format"]["outputs"]["pred"]
    assert list(pred["channel_def"].values()) == common["class_names"]
    assert pred["num_channels"] == len(common["class_names"])
    image = META["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [common["image_size"]] * 2
