"""Weights carry their recipe: the workflows take it as their defaults and refuse settings or datalists that
contradict it, naming both sides; pretrained weights of another network are refused."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from bundle.atomic import atomic_save
from bundle.checkpoints import load_pretrained, make_recipe, read_recipe, recipe_path, save_weights
from bundle.checkpoints.recipe import check_pretrained_recipe, check_recipe, contradictions
from bundle.errors import UserError
from bundle.networks import MultiTaskNet
from bundle.workflow import parsed
from tests.conftest import CLASS_NAMES, ROOT, copy_models
from tests.helpers import bundle_in_process, run_bundle

TRAIN, EVALUATE = str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "evaluate.json")
EVAL_CONFIGS = f"['{TRAIN}','{EVALUATE}']"
SAMPLE = ROOT / "data" / "sample"


def message(proc) -> str:
    """The one message a refused run ends with; there is no traceback."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.stderr.strip()


# ---- the recipe itself ---------------------------------------------------------------------------------------


def test_recipe_sits_beside_its_weights_as_json(tmp_path):
    recipe = make_recipe({"backbone": "resnet10", "image_size": "64", "multi_label": "true", "class_names": ("a",)})
    save_weights({"w": torch.zeros(2)}, tmp_path / "m.pt", recipe)
    assert recipe_path(tmp_path / "m.pt") == str(tmp_path / "m.recipe.json")
    written = json.loads((tmp_path / "m.recipe.json").read_text())
    assert written == read_recipe(tmp_path / "m.pt") == recipe
    assert written["image_size"] == 64 and written["multi_label"] is True and written["class_names"] == ["a"]
    assert {"preprocessing", "bundle_version", "kind"} <= set(written)
    assert read_recipe(None) == {} and read_recipe(tmp_path / "other.pt") == {}


def test_a_damaged_recipe_is_one_message(tmp_path):
    (tmp_path / "m.recipe.json").write_text("{not json")
    with pytest.raises(UserError, match=r"ckpt_file: the recipe .*m\.recipe\.json of .*m\.pt cannot be read"):
        read_recipe(tmp_path / "m.pt")


def test_contradictions_compare_values_not_spellings():
    recipe = make_recipe({"image_size": 224, "multi_label": False, "class_names": ["a", "b"]})
    assert contradictions(recipe, {"image_size": "224", "multi_label": "false", "class_names": ("a", "b")}) == []
    assert contradictions(recipe, {"class_names": ["b", "a"]}) == [("class_names", ["b", "a"], ["a", "b"])]


def test_weights_without_a_recipe_warn_and_pretrained_weights_are_not_a_model(tmp_path, caplog):
    atomic_save({"w": torch.zeros(1)}, tmp_path / "m.pt")
    with caplog.at_level(logging.WARNING):
        check_recipe({}, {"image_size": 64}, tmp_path / "m.pt")
    assert "has no recipe" in caplog.text and "cannot be checked" in caplog.text
    encoder = make_recipe({"backbone": "resnet10"}, "pretrained")
    with pytest.raises(UserError, match=r"holds pretrained weights .* not a model: .*--pretrained_ckpt"):
        check_recipe(encoder, {"backbone": "resnet10"}, tmp_path / "m.pt")


def test_configs_take_the_weights_values_as_defaults(trained_tiny):
    """The tiny model was trained at 32 px: evaluation and inference use 32 unless told otherwise."""
    model = trained_tiny.models / "model.pt"
    assert read_recipe(model)["image_size"] == 32
    assert parsed(["train", "evaluate"], {"ckpt_dir": str(trained_tiny.models)}, "image_size") == [32]
    assert parsed("inference", {"ckpt_file": str(model)}, "image_size", "class_names") == [32, CLASS_NAMES]
    assert parsed("train", None, "image_size") == [224]  # no weights to start from: the configs' default


# ---- the real commands ---------------------------------------------------------------------------------------


def test_a_model_evaluated_at_another_size_is_refused_naming_both(trained_tiny, tmp_path):
    args = [a for a in trained_tiny.args if a not in ("--image_size", "32")]
    proc = bundle_in_process(
        "run", "--config_file", EVAL_CONFIGS, "--ckpt_dir", str(trained_tiny.models), *args,
        "--output_dir", str(tmp_path / "eval"), "--image_size", "224", cwd=trained_tiny.cwd,
    )  # fmt: skip
    text = message(proc)
    assert f"ckpt_dir {trained_tiny.models / 'model.pt'} was made with other settings than this run's" in text
    assert "image_size: 224 given, the weights were made with 32" in text
    assert not (tmp_path / "eval").exists()  # stopped before any work


def test_inference_refuses_the_shipped_model_at_64_px(tmp_path):
    proc = bundle_in_process(
        "run", "--config_file", str(ROOT / "configs" / "inference.json"), "--bundle_root", str(ROOT),
        "--dataset_dir", str(SAMPLE / "images"), "--output_dir", str(tmp_path / "out"), "--image_size", "64",
    )  # fmt: skip
    assert "image_size: 64 given, the weights were made with 224" in message(proc)


def test_a_swapped_class_order_is_refused_naming_both(tmp_path):
    """A datalist prepared with viral and COVID-19 swapped: the shipped model would score each as the other."""
    content = json.loads((SAMPLE / "datalist.json").read_text())
    swap = {2: 3, 3: 2}
    swapped = ["normal", "bacterial_pneumonia", "covid19", "viral_pneumonia"]
    content.pop("labels")
    content["class_names"] = swapped
    content["test"] = [dict(e, label=swap.get(e["label"], e["label"])) for e in content.pop("training")[:12]]
    (tmp_path / "datalist.json").write_text(json.dumps(content))
    proc = bundle_in_process(
        "run", "--config_file", EVAL_CONFIGS, "--bundle_root", str(ROOT), "--dataset_dir", str(SAMPLE),
        "--datalist", str(tmp_path / "datalist.json"), "--output_dir", str(tmp_path / "eval"),
    )  # fmt: skip
    text = message(proc)
    assert f"declares the classes {swapped}, this run has {CLASS_NAMES}" in text
    assert "--classes normal,bacterial_pneumonia,viral_pneumonia,covid19" in text


def test_weights_of_another_backbone_are_refused_as_pretrained(tmp_path):
    """resnet18 weights given to a resnet10 run: with their recipe the backbones are named, without it the
    match count is."""
    other = MultiTaskNet(num_classes=4, backbone="resnet18").state_dict()
    save_weights(other, tmp_path / "with.pt", make_recipe({"backbone": "resnet18"}, "pretrained"))
    atomic_save(other, tmp_path / "without.pt")
    common = ["--bundle_root", str(ROOT), "--backbone", "resnet10", "--output_dir", str(tmp_path / "out")]
    common += ["--ckpt_dir", str(tmp_path / "models"), "--num_workers", "0"]
    proc = bundle_in_process("run", "--config_file", TRAIN, "--pretrained_ckpt", str(tmp_path / "with.pt"), *common)
    assert "backbone: resnet10 given, the weights were made with resnet18" in message(proc)
    proc = bundle_in_process("run", "--config_file", TRAIN, "--pretrained_ckpt", str(tmp_path / "without.pt"), *common)
    text = message(proc)
    assert f"pretrained_ckpt {tmp_path / 'without.pt'}: matches" in text and "of the encoder's 72 tensors" in text
    assert "--pretrained_min_match" in text


def test_pretrained_min_match_lowers_the_threshold(tmp_path):
    """Half the encoder is refused by default (0.9) and loaded when the user lowers the share on purpose."""
    encoder = [(k, v) for k, v in MultiTaskNet(num_classes=4).state_dict().items() if k.startswith("encoder.")]
    atomic_save(dict(encoder[: len(encoder) // 2]), tmp_path / "half.pt")
    half = len(encoder) // 2
    told = rf"matches {half} of the encoder's {len(encoder)} tensors \(50%, under pretrained_min_match 0.9\)"
    with pytest.raises(UserError, match=told):
        load_pretrained(MultiTaskNet(num_classes=4), tmp_path / "half.pt")
    report = load_pretrained(MultiTaskNet(num_classes=4), tmp_path / "half.pt", min_match=0.4)
    assert len(report["matched"]) == half


def test_a_resume_state_of_other_settings_is_refused(trained_tiny, tmp_path):
    ckpt_dir = copy_models(trained_tiny, tmp_path / "models")
    args = [a for a in trained_tiny.args if a not in ("--image_size", "32")]
    proc = bundle_in_process(
        "run", "--config_file", TRAIN, "--ckpt_dir", str(ckpt_dir), "--output_dir", str(tmp_path / "out"),
        "--max_epochs", "3", "--image_size", "64", *args,
    )  # fmt: skip
    text = message(proc)
    assert f"cannot resume training from {ckpt_dir / 'checkpoint.pt'}: it was made with other settings" in text
    assert "image_size 32 there, 64 now" in text and "--resume false" in text


@pytest.mark.slow
def test_pretraining_writes_an_encoder_recipe_that_training_reads(tmp_path):
    out = tmp_path / "pre"
    common = ["--bundle_root", str(ROOT), "--image_size", "32", "--batch_size", "4", "--num_workers", "0"]
    common += ["--max_epochs", "1", "--amp", "false"]
    run_bundle(
        "run", "--config_file", str(ROOT / "configs" / "pretrain_pretext.json"), "--ckpt_dir", str(out),
        "--output_dir", str(out), "--probe_interval", "0", *common,
    )  # fmt: skip
    pretrained = next(out.glob("pretrained_*.pt"))
    recipe = read_recipe(pretrained)
    assert recipe["kind"] == "pretrained" and recipe["image_size"] == 32 and recipe["ssl_method"] == "rotation"
    assert parsed("train", {"pretrained_ckpt": str(pretrained)}, "image_size", "backbone") == [32, "resnet10"]
    shutil.rmtree(out)


def test_weights_of_another_preprocessing_are_told(tmp_path, caplog):
    recipe = make_recipe({"image_size": 224})
    recipe["preprocessing"] = dict(recipe["preprocessing"], intensity="z-score per image")
    save_weights({"w": torch.zeros(1)}, tmp_path / "m.pt", recipe)
    with caplog.at_level(logging.WARNING):
        check_recipe(read_recipe(tmp_path / "m.pt"), {"image_size": 224}, tmp_path / "m.pt")
    assert "was made with another preprocessing" in caplog.text and "z-score per image" in caplog.text


def test_pretrained_recipe_stops_only_on_the_settings_it_requires(tmp_path, caplog):
    weights = tmp_path / "encoder.pt"
    recipe = make_recipe({"backbone": "vit_s16", "vit_pool": "token", "image_size": 224}, "pretrained")
    save_weights({"encoder.x": torch.zeros(1)}, weights, recipe)
    settings = {"backbone": "vit_s16", "vit_pool": "mean", "image_size": 128}
    with caplog.at_level(logging.WARNING):
        check_pretrained_recipe(recipe, settings, str(weights))  # pooling and size are choices: warnings
    assert "vit_pool is mean" in caplog.text and "image_size is 128" in caplog.text
    with pytest.raises(UserError, match="vit_pool: mean given, the weights were made with token") as stop:
        check_pretrained_recipe({**recipe, "requires": ["vit_pool"]}, settings, str(weights))
    assert "image_size" not in str(stop.value)  # still a warning
