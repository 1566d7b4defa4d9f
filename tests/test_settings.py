"""bundle.settings: the one parser behind every boolean id, and the check of every setting before any work."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from bundle.values import as_bool


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        (False, False),
        ("true", True),
        ("False", False),
        (" TRUE ", True),
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
        (np.bool_(True), True),
        ("yes", True),
        ("No", False),
        ("on", True),
        ("OFF", False),
        ("y", True),
        ("f", False),
        ("", False),
        (None, False),
    ],
)
def test_accepted_spellings(value, expected):
    assert as_bool(value, "resume") is expected


@pytest.mark.parametrize("value", ["flase", "maybe", "2", 2, -1, 0.5, [True]])
def test_anything_else_is_refused_with_the_id_name(value):
    with pytest.raises(ValueError, match=r"^multi_instance must be true or false"):
        as_bool(value, "multi_instance")


def test_every_boolean_consumer_parses_strings():
    """The CLI passes ``--multi_label false`` as the string 'false': every consumer reads it as False."""
    from bundle.data.transforms import ClassLabeld
    from bundle.engines.multitask import MultiTaskOutputs
    from bundle.evaluation.attention import LungAttentionReport
    from bundle.inference.outputs import InferenceOutputs
    from bundle.inference.writer import PredictionWriter
    from bundle.saliency import SaliencyInferer

    assert ClassLabeld(4, multi_label="false").multi_label is False
    assert MultiTaskOutputs(4, multi_label="true").multi_label is True
    assert InferenceOutputs(multi_label="0").multi_label is False
    assert SaliencyInferer("none", multi_label="1").multi_label is True
    assert LungAttentionReport("out", ["a"], multi_label="false").multi_label is False
    writer = PredictionWriter("out", ["a"], write_masks="false", write_saliency="true", write_overlays="0")
    assert (writer.write_masks, writer.write_saliency, writer.write_overlays) == (False, True, False)
    with pytest.raises(ValueError, match="write_overlays"):
        PredictionWriter("out", ["a"], write_overlays="maybe")


# ---------------------------------------------------------------------------------------------------------------
# check: every setting before any work


def _problems(settings: dict, workflow: str = "train") -> str:
    from bundle.errors import UserError
    from bundle.settings import check

    with pytest.raises(UserError) as err:
        check(settings, workflow)
    assert err.value.code == str(err.value)  # SystemExit's code is the message: Python prints it, exit status 1
    return str(err.value)


def _good(tmp_path) -> dict:
    return {
        "bundle_root": str(tmp_path),
        "dataset_dir": str(tmp_path),
        "ckpt_dir": str(tmp_path / "new" / "ckpt"),
        "class_names": ["normal", "pneumonia"],
        "multi_label": "false",
        "image_size": 64,
        "backbone": "resnet10",
        "batch_size": 4,
        "label_fraction": 0.5,
        "learning_rate": 1e-3,
        "device": "cpu",
        "resume": "yes",
    }


def test_valid_settings_pass_unchanged(tmp_path):
    from bundle.settings import check

    settings = _good(tmp_path)
    assert check({"_desc_": "ignored", **settings}, "train")["image_size"] == 64


@pytest.mark.parametrize(
    "name,value,allowed",
    [
        ("label_fraction", 0, "must be a number in (0, 1]"),
        ("label_fraction", 1.5, "must be a number in (0, 1]"),
        ("label_fraction", "half", "must be a number in (0, 1]"),
        ("image_size", 16, "must be an integer >= 32 and a multiple of 32"),
        ("image_size", 64.0, "must be an integer >= 32 and a multiple of 32"),
        ("batch_size", 0, "must be an integer >= 1"),
        ("learning_rate", float("nan"), "must be a number in (0, 10]"),
        ("learning_rate", -1e-3, "must be a number in (0, 10]"),
        ("backbone", "resnet11", "must be one of efficientnet-b0"),
        ("resume", "maybe", "must be true or false"),
        ("device", "cuda:99", "CUDA"),
        ("device", "tpu", "must be a torch device"),
        ("class_names", [], "non-empty list of class names"),
        ("class_names", ["a", "a"], "must not name a class twice"),
        ("dataset_dir", "/nonexistent/folder", "no such folder"),
    ],
)
def test_a_bad_setting_names_the_id_the_value_and_what_is_allowed(tmp_path, name, value, allowed):
    message = _problems({**_good(tmp_path), name: value})
    assert message.startswith("1 setting(s) cannot be used, nothing was run:")
    assert f"{name}: {value!r} " in message and allowed in message


def test_every_bad_setting_is_listed_at_once(tmp_path):
    message = _problems({**_good(tmp_path), "label_fraction": 0, "batch_size": -2, "multi_label": "perhaps"})
    assert message.startswith("3 setting(s)")
    assert all(f"  - {n}:" in message for n in ("label_fraction", "batch_size", "multi_label"))


def test_an_output_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert "cannot be created" in _problems({**_good(tmp_path), "ckpt_dir": str(blocker / "sub")})
    assert "is a file, not a folder" in _problems({**_good(tmp_path), "output_dir": str(blocker)})
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "not writable" in _problems({**_good(tmp_path), "output_dir": str(locked / "out")})


def test_combinations(tmp_path):
    good = {**_good(tmp_path), "ckpt_dir": str(tmp_path)}  # inference reads an existing ckpt_dir
    assert (
        "image_size: 100 cannot be halved five times by the encoder and decoder; use a multiple of 32 (e.g. 96 or 128)"
        in _problems({**good, "image_size": 100})
    )
    assert "has one class" in _problems({**good, "class_names": ["pneumonia"]})
    check_one_class = {**good, "class_names": ["pneumonia"], "multi_label": "true"}
    from bundle.settings import check

    check(check_one_class, "train")  # one yes/no finding is fine as multi-label
    assert "leaves no image for training" in _problems({**good, "val_fraction": 0.5, "test_fraction": 0.5})
    assert "nothing to learn" in _problems({**good, "w_cls": 0, "w_seg": 0.0})
    assert "not one of the class names" in _problems({**good, "saliency_class": "covid"}, "inference")
    assert "not a class index in [0, 1]" in _problems({**good, "saliency_class": 2}, "inference")
    assert "larger than image_size" in _problems({**good, "occlusion_mask_size": 65}, "inference")
    assert "rollout explains a transformer's attention and backbone" in _problems(
        {**good, "saliency": "rollout"}, "inference"
    )
    from bundle.networks.multitask import MultiTaskNet
    from bundle.saliency import default_target_layer

    default = default_target_layer(MultiTaskNet(num_classes=2, backbone=good["backbone"]))
    expected = (
        f"is not a module of the {good['backbone']} encoder (the default, when saliency_layer is null, is {default})"
    )
    assert expected in _problems({**good, "saliency_layer": "decoder.blocks.0"}, "inference")
    check({**good, "saliency_layer": "encoder.layer3"}, "inference")
    check({**good, "saliency_layer": "encoder.layer3+encoder.layer4"}, "inference")
    assert "names encoder.layer9, not modules" in _problems(
        {**good, "saliency_layer": "encoder.layer3+encoder.layer9"}, "inference"
    )
    assert "empty layer name" in _problems({**good, "saliency_layer": "encoder.layer3+"}, "inference")
    moco = {**good, "ssl_method": "moco", "queue_size": 2, "batch_size": 4}
    assert "MoCo's queue" in _problems(moco, "pretrain_contrastive")


def test_ssl_method_depends_on_the_workflow(tmp_path):
    from bundle.settings import check

    good = _good(tmp_path)
    check({**good, "ssl_method": "SimCLR"}, "pretrain_contrastive")
    assert "must be one of simclr, moco, byol, simsiam" in _problems(
        {**good, "ssl_method": "mae"}, "pretrain_contrastive"
    )
    assert "must be one of rotation, jigsaw" in _problems({**good, "ssl_method": "simclr"}, "pretrain_pretext")
    assert "must be one of inpainting, outpainting, group_masked" in _problems(
        {**good, "ssl_method": "rotation"}, "pretrain_inpainting"
    )


def test_ranges_and_pairs(tmp_path):
    good = _good(tmp_path)
    assert "(one value or [min, max])" in _problems({**good, "mask_ratio": [0.5, 1.0]}, "pretrain_inpainting")
    assert "min <= max" in _problems({**good, "gamma_range": [1.5, 0.7]}, "pretrain_contrastive")
    assert "must be an integer >= 3" in _problems({**good, "hist_shift_points": [2, 10]}, "pretrain_contrastive")
    from bundle.settings import check

    check({**good, "mask_ratio": 0.6, "holes": [1, 8], "hole_size": None}, "pretrain_inpainting")


def test_a_setting_without_a_rule_is_a_config_error(tmp_path):
    assert "no rule checks this setting" in _problems({**_good(tmp_path), "new_knob": 3})


def test_debug_id_switches_tracebacks_on(tmp_path):
    from bundle import errors
    from bundle.settings import check

    try:
        with pytest.raises(errors.DebugUserError, match="label_fraction"):
            check({**_good(tmp_path), "debug": "true", "label_fraction": 2}, "train")
    finally:
        errors.set_debug(False)
    assert not errors.debug_enabled() or os.environ.get("CXR_DEBUG")


def _settings_doc():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("make_settings_doc", ROOT / ".ci" / "make_settings_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_rule_has_a_description():
    """docs/settings.md is written from the rules: each id's rule says in one line what the id is."""
    from bundle.settings import RULES, WORKFLOW_RULES

    rules = [(name, rule) for name, rule in RULES.items()]
    rules += [
        (f"{workflow}: {name}", rule) for workflow, table in WORKFLOW_RULES.items() for name, rule in table.items()
    ]
    missing = [name for name, rule in rules if not str(getattr(rule, "description", "")).strip()]
    assert not missing, f"rules without a description (bundle.values.described): {missing}"


def test_described_leaves_shared_rules_alone():
    from bundle.values import allowed_text, boolean, described, integer, optional

    a, b = described(boolean, "first id"), described(boolean, "second id")
    assert (a.description, b.description) == ("first id", "second id") and not hasattr(boolean, "description")
    assert a("yes") is None and a("maybe") == boolean("maybe")
    assert allowed_text(a) == "true or false (or yes/no, on/off, 1/0)"
    assert allowed_text(optional(integer(1))) == "an integer >= 1, or null"
    assert allowed_text(described(None, "any", "a class name")) == "a class name" and described(None, "x")(1) is None


def test_the_settings_page_is_current():
    """docs/settings.md equals what the rules and configs give (``make docs`` rewrites it)."""
    from tests.conftest import ROOT

    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == _settings_doc().render(), "docs/settings.md is stale: run `make docs`"


def test_the_settings_page_lists_every_id_and_check():
    import re

    from bundle.settings import CHECKS, RULES, WORKFLOW_RULES

    page = _settings_doc().render()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    listed = {re.match(r"\| `([a-z_]+)`", row).group(1) for row in rows}
    assert listed == set(RULES) | {k for table in WORKFLOW_RULES.values() for k in table}
    # every row has its five cells: no value's "|" breaks the table
    assert all(len(re.split(r"(?<!\\)\|", row)) == 7 for row in rows)
    assert all(f"{c.__module__}.{c.__name__}" in page for c in CHECKS)


def test_option_gives_scripts_the_same_rules():
    import argparse

    from bundle.settings import option
    from bundle.values import integer

    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--label_fraction", type=option("label_fraction"))
    parser.add_argument("--image_size", type=option("image_size"))
    parser.add_argument("--workers", type=option(integer(1)))
    args = parser.parse_args(["--label_fraction", "1", "--image_size", "64", "--workers", "3"])
    assert (args.label_fraction, args.image_size, args.workers) == (1, 64, 3)
    for argv, expected in [
        (["--label_fraction", "1.5"], "argument --label_fraction: 1.5 must be a number in (0, 1]"),
        (["--image_size", "100"], "argument --image_size: 100 cannot be halved five times"),
        (["--workers", "two"], "argument --workers: 'two' must be an integer >= 1"),
    ]:
        with pytest.raises(argparse.ArgumentError, match=re.escape(expected)):
            parser.parse_args(argv)


def test_speed_switches(tmp_path, monkeypatch):
    import torch

    from bundle import settings
    from bundle.settings import check
    from bundle.values import autocast_dtype

    good = _good(tmp_path)
    check({**good, "amp_dtype": "BFloat16", "channels_last": "true", "compile": "false"}, "train")
    assert "amp_dtype: 'int8' must be one of bfloat16, float16" in _problems({**good, "amp_dtype": "int8"})
    assert "channels_last: 'maybe' must be true or false" in _problems({**good, "channels_last": "maybe"})
    assert "compile: 2 must be true or false" in _problems({**good, "compile": 2})
    assert autocast_dtype(" bfloat16") is torch.bfloat16 and autocast_dtype("float16") is torch.float16
    with pytest.raises(ValueError, match="amp_dtype must be one of bfloat16, float16"):
        autocast_dtype("float32")
    # the multi-GPU overlays add sync_batch_norm: compile is refused there
    assert "compile: true is not supported with the multi-GPU overlays" in _problems(
        {**good, "compile": "true", "sync_batch_norm": False}
    )
    # bfloat16 on a GPU without it (the device rule is bypassed: this machine may have no CUDA)
    monkeypatch.setattr(settings, "device_type", lambda v: "cuda")
    monkeypatch.setattr(settings, "_bf16_supported", lambda: False)
    cuda = {**good, "device": "cuda", "amp": True}
    assert any(
        "amp_dtype: 'bfloat16' is not supported by this GPU" in p
        for p in settings.amp_check({**cuda, "amp_dtype": "bfloat16"}, "train")
    )
    assert not settings.amp_check({**cuda, "amp_dtype": "float16"}, "train")
    assert not settings.amp_check({**cuda, "amp": False, "amp_dtype": "bfloat16"}, "train")
    monkeypatch.setattr(settings, "_bf16_supported", lambda: True)
    assert not settings.amp_check({**cuda, "amp_dtype": "bfloat16"}, "train")
