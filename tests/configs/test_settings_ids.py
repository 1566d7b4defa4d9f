"""Every config checks every one of its settings before any work: ``settings`` lists them all, each has a rule.

``make configs`` derives ``settings`` from the config's setting ids (``"label_fraction": "@label_fraction"``);
these tests check that the check runs first, that every setting has a rule and that the defaults pass.
"""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigParser

from bundle.settings import RULES, WORKFLOW_RULES
from tests.configs.test_layers import MAKE_CONFIGS
from tests.conftest import ROOT

WORKFLOWS = {
    "train": "train",
    "inference": "inference",
    "pretrain_contrastive": "pretrain_contrastive",
    "pretrain_inpainting": "pretrain_inpainting",
    "pretrain_pretext": "pretrain_pretext",
    "pretrain_curriculum": "curriculum",
}


def _config(name: str) -> dict:
    return json.loads((ROOT / "configs" / f"{name}.json").read_text())


def _setting_ids(config: dict) -> set[str]:
    """Top-level ids holding a value a user sets (the rule ``make configs`` derives ``settings`` with)."""
    return {k for k, v in config.items() if MAKE_CONFIGS.is_setting(k, v)}


INPUT_CHECKS = ("$bundle.checkpoints.check_", "$bundle.data.datalist.check_class_names(")


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_settings_lists_every_setting_and_is_checked_first(name):
    config = _config(name)
    settings = config["settings"]
    listed = {k for k in settings if not k.startswith("_")}
    assert listed == _setting_ids(config), f"{name}.json settings differ from its setting ids"
    assert all(settings[k] == f"@{k}" for k in listed)
    # first in run, not initialize: monai.bundle.load and the zoo's property checks initialize without running,
    # from folders where the data and output folders need not exist
    assert config["run"][0] == f"$bundle.settings.check(@settings, '{WORKFLOWS[name]}')"
    # then the checks of the run's inputs against each other (weights' recipe, datalist's classes), then the lock
    steps = [step for step in config["run"][1:] if not step.startswith(INPUT_CHECKS)]
    assert steps[0].startswith("$bundle.runlock.lock(")
    assert config["run"].index(steps[0]) == 1 + sum(step.startswith(INPUT_CHECKS) for step in config["run"][1:4])
    assert not any("settings" in step or "runlock" in step or "pretrained" in step for step in config["initialize"])
    rules = {**RULES, **WORKFLOW_RULES.get(WORKFLOWS[name], {})}
    assert listed <= set(rules), f"no rule for {sorted(listed - set(rules))}"


def test_evaluate_adds_its_own_settings_on_top_of_train():
    evaluate = _config("evaluate")
    own = _setting_ids(evaluate)
    added = {k.split("#", 1)[1] for k in evaluate if k.startswith("settings#")}
    assert added == {"saliency", "saliency_layer", "n_overlays", "n_bootstrap"}
    # its own defaults (<ckpt_dir>/evaluation, its MLflow experiment); train.json's settings name them
    assert own == added | {"output_dir", "experiment_name"}
    assert evaluate["run"][0] == "$bundle.settings.check(@settings, 'evaluate')"
    assert added <= set(RULES)


@pytest.mark.parametrize("name", sorted(WORKFLOWS) + ["evaluate"])
def test_the_defaults_pass_the_check(name):
    from bundle.settings import check

    files = [ROOT / "configs" / "train.json", ROOT / "configs" / "evaluate.json"] if name == "evaluate" else None
    parser = ConfigParser()
    parser.read_config(files or ROOT / "configs" / f"{name}.json")
    parser["bundle_root"] = str(ROOT)
    settings = parser.get_parsed_content("settings")
    assert check(settings, WORKFLOWS.get(name, "evaluate"))
