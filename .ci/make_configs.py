"""Write the standalone configs from their layers, with MONAI's own parser.

Each workflow config in ``configs/`` is complete on its own, as the model zoo, MONAI Label and ``python -m
monai.bundle run --config_file configs/<name>.json`` read it: one file holds the whole recipe. What several
workflows share is written once, in ``configs/layers/``:

* ``common.json``: the data, network and device ids of every workflow;
* ``training.json``: what fine-tuning and pretraining share (caching, splits' seed, schedule, resume, loading);
* ``pretraining.json``: what the three pretraining workflows share (unlabelled images, probe, trainer);
* ``<name>.json``: each workflow's own ids (``"+train"`` adds to the ``train`` block, as MONAI's ``+`` merge key).

A config is ``ConfigParser.load_config_files`` of its layers in order (a later layer overrides or adds), with its
``settings`` map derived from its setting ids (each ``"<id>": "@<id>"``), so that ``bundle.settings.check``
sees every setting. Keys are ordered for reading: description and imports, the settings a user sets, the
recipe, then ``settings``, ``initialize``, ``run`` and ``finalize``.

    python .ci/make_configs.py --check   # list the configs that differ from their layers; exit 1 if any
    python .ci/make_configs.py --fix     # rewrite them (``make configs``)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
LAYERS = CONFIGS / "layers"

# config -> its layers, in the order they are merged (its own layer, of the same name, comes last)
RECIPES = {
    "train": ["common", "training"],
    "inference": ["common"],
    "pretrain_contrastive": ["common", "training", "pretraining"],
    "pretrain_inpainting": ["common", "training", "pretraining"],
    "pretrain_pretext": ["common", "training", "pretraining"],
    "pretrain_curriculum": [],
}
# top-level ids that hold a scalar but are computed from settings, not set by users (kept out of ``settings``)
DERIVED = {
    "splits",
    "weights_recipe",
    "output_name",
    "pretrained_out",
    "resume_ckpt",
    "batch_keys",
    "log_output",
    "mask_mode",
    "num_views",
    "pretext_options",
    "output_root",
    "network",
    "imports",
    "initialize",
    "run",
    "finalize",
    "settings",
}
HEAD = ("_desc_", "_layers_", "imports", "bundle_root")
TAIL = ("settings", "initialize", "run", "finalize")
# the order of the parts of a train / validate / probe block: data, then the engine and its handlers
BLOCK_ORDER = (
    "_desc_",
    "random_transforms",
    "deterministic_transforms",
    "preprocessing",
    "augment",
    "views",
    "dataset",
    "train_dataset",
    "val_dataset",
    "dataloader",
    "train_loader",
    "val_loader",
    "loaders",
    "inferer",
    "postprocessing",
    "key_metric",
    "additional_metrics",
    "snapshot",
    "handlers",
    "trainer",
    "evaluator",
    "tracking",
)
# the order of the recipe's components: what the data and the network are, then how they are trained or run
RECIPE_ORDER = (
    "load_transforms",
    "prepare_batch",
    "outputs",
    "network_def",
    "network_def_seg",
    "network",
    "loss",
    "optimizer",
    "lr_scheduler",
    "preprocessing",
    "dataset",
    "dataloader",
    "inferer",
    "postprocessing",
    "writer",
    "handlers",
    "evaluator",
    "train",
    "validate",
    "probe",
    "stage_defaults",
    "stage_force",
    "stages",
    "tracking",
)
SETTINGS_DESC = "Every setting above, checked by bundle.settings.check before any work (derived by make configs)."


def is_setting(key: str, value: object) -> bool:
    """A top-level id holding a value a user sets: a scalar, a list of scalars, or an expression of other ids."""
    if key.startswith("_") or key in DERIVED or "#" in key:
        return False
    if isinstance(value, dict):
        return False  # a component
    return not (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))  # transforms, stages


def _ordered_block(block: dict) -> dict:
    rank = {key: i for i, key in enumerate(BLOCK_ORDER)}
    return dict(sorted(block.items(), key=lambda item: rank.get(item[0], len(BLOCK_ORDER) // 2)))


def _ordered(config: dict) -> dict:
    """Description and imports, the settings, the ids derived from them, the recipe's components, then
    settings/initialize/run/finalize."""
    head = {k: config[k] for k in HEAD if k in config}
    middle = {k: v for k, v in config.items() if k not in head and k not in TAIL}
    knobs = {k: v for k, v in middle.items() if is_setting(k, v)}
    rank = {key: i for i, key in enumerate(RECIPE_ORDER)}
    derived = {k: v for k, v in middle.items() if k not in knobs and k not in rank}
    parts = sorted((k for k in middle if k in rank), key=rank.__getitem__)
    recipe = {k: _ordered_block(middle[k]) if k in ("train", "validate", "probe") else middle[k] for k in parts}
    return {**head, **knobs, **derived, **recipe, **{k: config[k] for k in TAIL if k in config}}


def layer_files(name: str) -> list[Path]:
    """The layers of config ``name``, in the order they are merged."""
    return [LAYERS / f"{layer}.json" for layer in [*RECIPES[name], name]]


def build(name: str) -> dict:
    """The standalone config ``name``: its layers merged by MONAI's parser, ``settings`` derived, keys ordered."""
    files = layer_files(name)
    config = ConfigParser.load_config_files([str(f) for f in files])
    config.pop("settings", None)
    settings = {"_desc_": SETTINGS_DESC}
    settings.update({k: f"@{k}" for k, v in _ordered(config).items() if is_setting(k, v)})
    config["settings"] = settings
    config["_layers_"] = f"written by `make configs` from configs/layers/{{{','.join(f.stem for f in files)}}}.json"
    return _ordered(config)


def text(config: dict) -> str:
    """The config as the repository formats JSON (.ci/format_json.py)."""
    return json.dumps(config, indent=4, ensure_ascii=True, separators=(",", ": ")) + "\n"


def stale() -> list[str]:
    """The configs whose committed text differs from what their layers give."""
    return [name for name in RECIPES if (CONFIGS / f"{name}.json").read_text() != text(build(name))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list the configs that differ; exit 1 if any")
    mode.add_argument("--fix", action="store_true", help="rewrite every config from its layers")
    args = parser.parse_args(argv)
    if args.fix:
        for name in RECIPES:
            (CONFIGS / f"{name}.json").write_text(text(build(name)))
        return 0
    names = stale()
    for name in names:
        print(f"configs/{name}.json differs from configs/layers: run `make configs`")
    return 1 if names else 0


if __name__ == "__main__":
    sys.exit(main())
