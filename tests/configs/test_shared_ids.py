"""The self-contained configs repeat their shared ids; these tests keep the copies equal so they cannot drift.

Every config runs on its own from any working directory, so no config pulls ids from another file (a
``%file::id`` macro opens its path relative to the working directory). The price is that ids such as the
classes, the image size, the backbone or the loading transforms are written in several files: any top-level id
found in two or more of them must be identical unless it is listed below with the reason it differs.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT

STANDALONE = [
    "train",
    "inference",
    "pretrain_contrastive",
    "pretrain_inpainting",
    "pretrain_pretext",
    "pretrain_curriculum",
]
PRETRAINING = ["pretrain_contrastive", "pretrain_inpainting", "pretrain_pretext"]
CONFIGS = {name: json.loads((ROOT / "configs" / f"{name}.json").read_text()) for name in STANDALONE}

# ids that are each config's own recipe, not a shared setting
DIFFERS = {
    "_desc_",
    "network_def",  # each workflow builds its own module around the same network
    "optimizer",  # the inpainting method optimises its decoder too
    "learning_rate",
    "weight_decay",
    "max_epochs",
    "ssl_method",
    "batch_keys",  # the views each pretraining method reads from the batch
    "log_output",
    "output_name",
    "pretrained_out",  # the curriculum names its final output after itself
    "splits",  # fine-tuning splits labelled images; pretraining also takes unlabelled ones (checked below)
    "probe",  # the contrastive probe reuses its two-view cache (the other two are checked below)
    "train",
    "validate",
    "initialize",
    "run",
    "finalize",
    "settings",  # each config lists its own setting ids (tests/configs/test_settings_ids.py)
}
# inference reads a folder of images, not a datalist, and keeps saliency gradients for a smaller batch
INFERENCE_OWN = {"dataset_dir", "datalist", "batch_size", "output_dir"}


def _shared_ids() -> list[str]:
    ids = sorted(set().union(*CONFIGS.values()) - DIFFERS)
    return [i for i in ids if sum(i in c for c in CONFIGS.values()) >= 2]


def _get(config: dict, path: str):
    for key in path.split("#"):
        config = config[key]
    return config


@pytest.mark.parametrize("item", _shared_ids())
def test_repeated_top_level_ids_are_equal(item):
    holders = [n for n in STANDALONE if item in CONFIGS[n] and not (n == "inference" and item in INFERENCE_OWN)]
    values = {n: json.dumps(CONFIGS[n][item], sort_keys=True) for n in holders}
    assert len(set(values.values())) == 1, f"{item!r} differs between configs: {values}"


def test_the_core_ids_are_shared_by_every_workflow():
    # the guard above only compares what is there: the ids every workflow needs must be there
    for item in ("imports", "bundle_root", "ckpt_dir", "class_names", "image_size", "backbone", "device"):
        missing = [n for n in STANDALONE if n != "pretrain_curriculum" and item not in CONFIGS[n]]
        assert not missing, f"{item!r} missing from {missing}"
    for name in ("train", *PRETRAINING):
        assert "load_transforms" in CONFIGS[name], name


@pytest.mark.parametrize(
    "paths",
    [
        [f"{n}#train#trainer" for n in PRETRAINING],
        [f"{n}#splits" for n in PRETRAINING],
        [
            "pretrain_contrastive#train#handlers",
            "pretrain_inpainting#train#shared_handlers",
            "pretrain_pretext#train#handlers",
        ],
        ["pretrain_inpainting#probe", "pretrain_pretext#probe"],
        [f"{n}#train#deterministic_transforms" for n in ("train", *PRETRAINING)],
        [
            "train#train#trainer#prepare_batch",
            "train#validate#evaluator#prepare_batch",
            "inference#evaluator#prepare_batch",
        ],
    ],
    ids=["ssl_trainer", "ssl_splits", "ssl_handlers", "ssl_probe", "load_transforms", "prepare_batch"],
)
def test_repeated_blocks_are_equal(paths):
    values = {p: json.dumps(_get(CONFIGS[p.split("#", 1)[0]], p.split("#", 1)[1]), sort_keys=True) for p in paths}
    assert len(set(values.values())) == 1, f"these blocks differ: {values}"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("*.json")))
def test_no_config_reads_another_file_by_macro(name):
    text = (ROOT / "configs" / f"{name}.json").read_text()
    assert not re.search(r'"%[^"@$]*\.(json|ya?ml)', text), f"configs/{name}.json has a cross-file macro"
