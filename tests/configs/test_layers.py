"""The standalone configs are written from their layers (configs/layers, ``make configs``): nothing is copied by
hand between configs, and each config still runs on its own from any folder."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from tests.conftest import ROOT


def _make_configs():
    spec = importlib.util.spec_from_file_location("make_configs", ROOT / ".ci" / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE_CONFIGS = _make_configs()


def test_every_config_equals_what_its_layers_give():
    assert not MAKE_CONFIGS.stale(), "a config was edited by hand: edit configs/layers and run `make configs`"


@pytest.mark.parametrize("name", sorted(MAKE_CONFIGS.RECIPES))
def test_no_layer_restates_what_a_layer_below_gives(name):
    *below, own = MAKE_CONFIGS.layer_files(name)
    given = MAKE_CONFIGS.ConfigParser.load_config_files([str(f) for f in below]) if below else {}
    layer = json.loads(own.read_text())
    copies = [k for k, v in layer.items() if k in given and given[k] == v]
    copies += [f"train#{k}" for k, v in layer.get("+train", {}).items() if given.get("train", {}).get(k) == v]
    assert not copies, f"configs/layers/{own.name} repeats {copies} from the layers below it"


def test_every_layer_is_used():
    used = {f.name for name in MAKE_CONFIGS.RECIPES for f in MAKE_CONFIGS.layer_files(name)}
    assert used == {p.name for p in (ROOT / "configs" / "layers").glob("*.json")}


def test_the_core_ids_are_shared_by_every_workflow():
    configs = {name: json.loads((ROOT / "configs" / f"{name}.json").read_text()) for name in MAKE_CONFIGS.RECIPES}
    for item in ("imports", "bundle_root", "ckpt_dir", "class_names", "image_size", "backbone", "device"):
        missing = [n for n, c in configs.items() if n != "pretrain_curriculum" and item not in c]
        assert not missing, f"{item!r} missing from {missing}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.json")), ids=lambda p: p.stem)
def test_no_config_reads_another_file_by_macro(path):
    # a %file::id macro opens its path relative to the working directory: the configs run from any folder
    assert not re.search(r'"%[^"@$]*\.(json|ya?ml)', path.read_text()), f"{path} has a cross-file macro"
