"""Reproduce the shipped weights (models/model.pt) from the CC BY images of the cxr-real collection.

    python scripts/train_release_model.py --src <your data>      # or: make weights

Steps, each a ``python -m monai.bundle run`` of this bundle's own configs, run from a temporary working directory
with absolute paths and ``--bundle_root`` (as the model zoo runs bundles):

1. the CC BY subset (scripts/make_sample_data.py ``--all``: Kermany et al. CC BY 4.0, Hannover Medical School
   CC BY 3.0 with v7labs CC BY 4.0 lung masks) into ``<work>/data``;
2. SimCLR pretraining of the encoder on its training patients (labels unused);
3. multi-task fine-tuning from the pretrained encoder (the best epoch by validation AUC is kept);
4. the weights stored as float16 (the zoo keeps files under 25 MB in git; the network runs in float32 after
   loading) in ``models/model.pt``, evaluated on the test patients from that very file, and the test metrics
   written as numbers into ``configs/metadata.json`` (``eval_metrics``) and ``<work>/release_metrics.json``.

The split is the bundle's own patient-level split (seed 0, 70/15/15) of that subset. Nothing here downloads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch

from bundle import workflow
from bundle.atomic import atomic_write, make_folder
from bundle.checkpoints import load_weights, read_recipe, save_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def bundle_run(configs: list[Path], overrides: dict[str, object], cwd: Path) -> None:
    """``python -m monai.bundle run`` of ``configs`` with ``overrides``; stops on the first failing step."""
    cmd = workflow.command(configs, overrides)
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def half_state_dict(path: Path) -> "OrderedDict[str, torch.Tensor]":
    """The network's state_dict with floating-point tensors in float16 (integer buffers unchanged)."""
    state = load_weights(path)
    return OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in state.items())


def release_metrics(metrics_file: Path) -> dict[str, float]:
    """The test-split figures that go into metadata ``eval_metrics`` (numbers, rounded to 4 digits)."""
    m = json.loads(metrics_file.read_text())
    keys = {
        "test_auc_macro": m["auc_macro"],
        "test_accuracy": m["accuracy"],
        "test_sensitivity_macro": m["sensitivity_macro"],
        "test_specificity_macro": m["specificity_macro"],
        "test_harmonic_mean": m["hm"],
        "test_lung_dice": m["dice_lung"],
        "test_lung_attention_mean": m.get("lung_attention", {}).get("mean"),
    }
    return {k: round(float(v), 4) for k, v in keys.items() if v is not None}


def write_metadata_metrics(metrics: dict[str, float]) -> None:
    """Replace ``eval_metrics`` in configs/metadata.json, keeping its key order and 4-space format."""
    path = CONFIGS / "metadata.json"
    meta = json.loads(path.read_text(), object_pairs_hook=OrderedDict)
    meta["eval_metrics"] = metrics
    with atomic_write(path, "w") as f:
        f.write(json.dumps(meta, indent=4, separators=(",", ": ")) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; stops with a usage error when ``--src`` holds no datalist."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "cxr-real")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "release")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet10")
    parser.add_argument("--pretrain_epochs", type=int, default=8)
    parser.add_argument("--train_epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "model.pt")
    parser.add_argument("--no_metadata", action="store_true", help="do not write eval_metrics into metadata.json")
    args = parser.parse_args(argv)
    if not (args.src / "datalist.json").is_file():
        parser.error(f"no datalist.json in {args.src} (the cxr-real collection)")
    return args


def train_and_evaluate(args: argparse.Namespace, work: Path) -> "OrderedDict[str, torch.Tensor]":
    """Steps 1 to 3 and the evaluation of step 4 under ``work``; returns the float16 weights evaluated."""
    data, pretrain, train, evaluate = (work / d for d in ("data", "pretrain", "train", "eval"))
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample_data.py"), "--src", str(args.src), "--out", str(data)]
        + ["--all"],
        check=True,
    )
    common = {"dataset_dir": data, "image_size": args.image_size, "backbone": args.backbone}
    with tempfile.TemporaryDirectory() as cwd:
        bundle_run(
            [CONFIGS / "pretrain_contrastive.json"],
            {**common, "ssl_method": "simclr", "max_epochs": args.pretrain_epochs, "probe_interval": 4}
            | {"ckpt_dir": pretrain, "output_dir": pretrain},
            Path(cwd),
        )
        bundle_run(
            [CONFIGS / "train.json"],
            {**common, "max_epochs": args.train_epochs, "pretrained_ckpt": pretrain / "pretrained_simclr.pt"}
            | {"ckpt_dir": train, "output_dir": train},
            Path(cwd),
        )
        # evaluate the file that ships: float16 storage, loaded into the float32 network
        shipped = work / "shipped"
        weights = half_state_dict(train / "model.pt")
        save_weights(weights, shipped / "model.pt", read_recipe(train / "model.pt"))
        bundle_run(
            [CONFIGS / "train.json", CONFIGS / "evaluate.json"],
            {**common, "ckpt_dir": shipped, "output_dir": evaluate},
            Path(cwd),
        )
    return weights


def release_summary(args: argparse.Namespace, metrics: dict[str, float], started: float) -> dict[str, object]:
    """What ``<work>/release_metrics.json`` records: the weights, the settings, the test figures and the time."""
    return {
        "weights": str(args.out),
        "size_mb": round(args.out.stat().st_size / 1e6, 2),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "pretrain_epochs": args.pretrain_epochs,
        "train_epochs": args.train_epochs,
        "split": "test patients of the bundle's patient-level split (seed 0, 70/15/15) of the CC BY subset",
        "metrics": metrics,
        "minutes": round((time.time() - started) / 60, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Reproduce the shipped weights and their test figures (see the module docstring)."""
    args = parse_args(argv)
    work = args.work.resolve()
    started = time.time()
    weights = train_and_evaluate(args, work)
    recipe = read_recipe(work / "shipped" / "model.pt")
    metrics = release_metrics(work / "eval" / "metrics.json")
    make_folder(args.out.parent, "the folder of --out")
    save_weights(weights, args.out, recipe)  # the very tensors evaluated above, and their recipe
    summary = release_summary(args, metrics, started)
    with atomic_write(work / "release_metrics.json", "w") as f:
        f.write(json.dumps(summary, indent=4) + "\n")
    if not args.no_metadata:
        write_metadata_metrics(metrics)
    print(json.dumps(summary, indent=4))


if __name__ == "__main__":
    main()
