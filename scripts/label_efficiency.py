"""Label efficiency: fine-tune with a fraction of the labels from scratch and from self-supervised pretraining.

    python scripts/label_efficiency.py --data ../shared/data/cxr-real --out runs/label_efficiency \\
        --image_size 224 --pretrain_epochs 100 --finetune_epochs 30 --batch_size 64 --seeds 0 1 2

1. One patient-grouped split of the datalist (``--split_seed``), written to ``<out>/split_datalist.json`` with
   explicit training / validation / test sections, so that every method and seed sees the same test patients
   and pretraining never sees a validation or test image.
2. Each method of ``METHODS`` except ``scratch`` pretrains once on ALL training images (labels unused).
3. For each method and seed: configs/train.json with ``--label_fraction`` (default 0.1) and ``--seed``, from the
   method's pretrained weights (``--pretrained_ckpt``), then configs/evaluate.json on the test split.
4. A markdown table of macro AUC and lung Dice on the test split (mean +- std over seeds) and the exact commands.

Every step is a ``python -m monai.bundle run ...`` subprocess (logs under ``<out>/logs``); a step whose output
already exists is skipped, so an interrupted study continues where it stopped (``--force`` redoes everything).
Every option is checked before the first step: a bad value stops with one message naming it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundle.atomic import atomic_write
from bundle.data.datalist import prepare_splits
from bundle.errors import fail, run_main
from bundle.settings import option, output_folder

ROOT = Path(__file__).resolve().parents[1]

CLASS_NAMES = ["normal", "bacterial_pneumonia", "viral_pneumonia", "covid19"]

# name -> how it pretrains: a bundle config (or list of configs) and the ids it overrides; None = from scratch.
# Adding a method is one entry here, e.g.
#   "outpainting": {"config": "configs/pretrain_inpainting.json", "overrides": {"ssl_method": "outpainting"}},
# Ids every pretraining config shares (datalist, dataset_dir, image_size, batch_size, max_epochs, ckpt_dir,
# output_dir, pretrained_out, seed) are set by this script; a config without max_epochs (a curriculum, say)
# can set "epochs_id": None and put its lengths in "overrides".
METHODS: dict[str, dict[str, Any] | None] = {
    "scratch": None,
    "simclr": {"config": "configs/pretrain_contrastive.json", "overrides": {"ssl_method": "simclr"}},
    "micle": {
        "config": "configs/pretrain_contrastive.json",
        "overrides": {"ssl_method": "simclr", "multi_instance": True},
    },
    "inpainting": {"config": "configs/pretrain_inpainting.json", "overrides": {"ssl_method": "inpainting"}},
    "group_masked": {"config": "configs/pretrain_inpainting.json", "overrides": {"ssl_method": "group_masked"}},
    "rotation": {"config": "configs/pretrain_pretext.json", "overrides": {"ssl_method": "rotation"}},
    "jigsaw": {"config": "configs/pretrain_pretext.json", "overrides": {"ssl_method": "jigsaw"}},
    # the shipped curriculum (inpainting, then SimCLR); max_epochs = --pretrain_epochs for EACH stage
    "inpainting_then_simclr": {"config": "configs/pretrain_curriculum.json", "overrides": {}},
}


def make_output_folder(out: Path) -> None:
    """Create ``--out`` (and ``logs`` in it), or stop with one message saying why it cannot be."""
    problem = output_folder(out)
    if problem:
        fail(f"--out {out} {problem}")
    try:
        (out / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out {out}: cannot create the folder ({e.strerror or e})", e)
    if not os.access(out, os.W_OK | os.X_OK):
        fail(f"--out {out}: cannot write in it (permission denied)")


def cli_value(value: Any) -> str:
    """A value as ``monai.bundle run`` (python-fire) parses it back: True/False, numbers, lists, strings."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def bundle_command(config: str | list[str], overrides: dict[str, Any]) -> list[str]:
    """``python -m monai.bundle run --config_file ... --bundle_root ROOT --id value ...``.

    Config paths relative to the bundle root (``configs/train.json``) become absolute and ``bundle_root`` is set,
    so the command runs from any working directory.
    """
    configs = [str(ROOT / c) for c in ([config] if isinstance(config, str) else config)]
    config_arg = configs[0] if isinstance(config, str) else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, "--bundle_root", str(ROOT)]
    for key, value in overrides.items():
        cmd += [f"--{key}", cli_value(value)]
    return cmd


def write_split(data: Path, out: Path, split_seed: int, val_fraction: float, test_fraction: float) -> Path:
    """The fixed patient-grouped split, as a datalist with absolute paths and all three sections."""
    splits = prepare_splits(
        data / "datalist.json",
        data,
        CLASS_NAMES,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=split_seed,
        require_label=True,
    )
    keep = ("image", "mask", "label", "patient")
    content = {
        "description": f"fixed split of {data / 'datalist.json'} (split_seed {split_seed}) for label efficiency",
        **{s: [{k: e[k] for k in keep if e.get(k) is not None} for e in splits[s]] for s in splits},
    }
    path = out / "split_datalist.json"
    text = json.dumps(content, indent=1)
    if not path.is_file() or path.read_text() != text:  # several studies may share one output folder
        with atomic_write(path, "w") as f:
            f.write(text)
    counts = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    print(f"split written to {path}: {counts} images", flush=True)
    return path


def shell_quote(arg: str) -> str:
    """Quote for a POSIX shell, readably: the config list goes in double quotes as the docs write it."""
    if shlex.quote(arg) == arg:
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


class Runner:
    """Runs bundle commands, logs them, remembers every command for the report."""

    def __init__(self, out: Path, dry_run: bool = False) -> None:
        self.out, self.dry_run = out, dry_run
        self.commands: list[str] = []
        (out / "logs").mkdir(parents=True, exist_ok=True)  # main has checked that it can be created

    def __call__(self, name: str, cmd: list[str], done: Path, force: bool) -> None:
        shown = " ".join(shell_quote(c) for c in ["python"] + cmd[1:])
        self.commands.append(shown)
        if done.exists() and not force:
            print(f"[skip] {name}: {done} exists", flush=True)
            return
        print(f"[run ] {name}: {shown}", flush=True)
        if self.dry_run:
            return
        log = self.out / "logs" / f"{name}.log"
        start = time.time()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log, "w") as f:
            proc = subprocess.run(cmd, cwd=self.out, stdout=f, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0 or not done.exists():
            tail = log.read_text()[-3000:]
            fail(f"{name} failed (exit {proc.returncode}, {done} missing); log {log}:\n{tail}")
        print(f"       done in {time.time() - start:.0f} s", flush=True)


def pretrain(runner: Runner, name: str, spec: dict, common: dict, args: argparse.Namespace) -> Path:
    """Pretrain ``name`` once on all training images; returns its pretrained weights."""
    folder = args.out / "pretrain" / name
    weights = folder / f"pretrained_{name}.pt"
    overrides = {
        **common,
        "batch_size": args.pretrain_batch_size or args.batch_size,
        "ckpt_dir": str(folder),
        "output_dir": str(folder / "eval"),
        "pretrained_out": str(weights),
        "seed": args.pretrain_seed,
    }
    epochs_id = spec.get("epochs_id", "max_epochs")
    if epochs_id:
        overrides[epochs_id] = args.pretrain_epochs
    overrides.update(spec.get("overrides", {}))
    runner(f"pretrain_{name}", bundle_command(spec["config"], overrides), weights, args.force)
    return weights


def finetune_and_test(
    runner: Runner, name: str, seed: int, weights: Path | None, common: dict, args: argparse.Namespace
) -> Path:
    """Train with ``label_fraction`` of the labels and ``seed``; evaluate on the test split; returns metrics.json."""
    folder = args.out / "finetune" / name / f"seed{seed}"
    overrides = {
        **common,
        "batch_size": args.batch_size,
        "max_epochs": args.finetune_epochs,
        "label_fraction": args.label_fraction,
        "seed": seed,
        "ckpt_dir": str(folder / "models"),
        "output_dir": str(folder / "train"),
    }
    if weights is not None:
        overrides["pretrained_ckpt"] = str(weights)
    runner(
        f"finetune_{name}_seed{seed}",
        bundle_command("configs/train.json", overrides),
        folder / "models" / "model.pt",
        args.force,
    )
    test = {**overrides, "output_dir": str(folder / "test")}
    test.pop("pretrained_ckpt", None)  # evaluation loads the fine-tuned model.pt
    runner(
        f"test_{name}_seed{seed}",
        bundle_command(["configs/train.json", "configs/evaluate.json"], test),
        folder / "test" / "metrics.json",
        args.force,
    )
    return folder / "test" / "metrics.json"


def summarise(values: list[float]) -> str:
    """``mean +- std`` (sample std; a single value has none), NaNs left out and counted."""
    good = [v for v in values if v is not None and not math.isnan(v)]
    if not good:
        return "n/a"
    text = f"{statistics.mean(good):.3f}" + (f" ± {statistics.stdev(good):.3f}" if len(good) > 1 else "")
    return text + (f" ({len(values) - len(good)} n/a)" if len(good) < len(values) else "")


def table(results: dict[str, dict[int, dict]], args: argparse.Namespace) -> str:
    """The markdown table of test-split metrics per method."""
    lines = [
        f"Test split of {args.data} (patient-grouped, split_seed {args.split_seed}); fine-tuning with "
        f"{args.label_fraction:.0%} of the training labels, {args.image_size} px, {args.pretrain_epochs} pretraining / "
        f"{args.finetune_epochs} fine-tuning epochs; mean ± std over seeds {', '.join(map(str, args.seeds))}.",
        "",
        "| initialisation | macro AUC | lung Dice | seeds |",
        "| --- | --- | --- | --- |",
    ]
    for name, per_seed in results.items():
        aucs = [m.get("auc_macro") for m in per_seed.values()]
        dice = [m.get("dice_lung") for m in per_seed.values()]
        lines.append(f"| {name} | {summarise(aucs)} | {summarise(dice)} | {len(per_seed)} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every value is range-checked at parsing, before any step runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "cxr-real",
        help="folder with datalist.json (labels, patients, masks)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "label_efficiency")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--seeds", nargs="+", type=option("seed"), default=[0, 1, 2])
    parser.add_argument(
        "--label_fraction",
        type=option("label_fraction"),
        default=0.1,
        help="share of the training labels used for fine-tuning, in (0, 1] (default: %(default)s)",
    )
    parser.add_argument("--image_size", type=option("image_size"), default=224, help="default 224")
    parser.add_argument("--pretrain_epochs", type=option("max_epochs"), default=100)
    parser.add_argument("--finetune_epochs", type=option("max_epochs"), default=30)
    parser.add_argument("--batch_size", type=option("batch_size"), default=32, help="fine-tuning batch size")
    parser.add_argument("--pretrain_batch_size", type=option("batch_size"), default=None, help="default: --batch_size")
    parser.add_argument(
        "--num_workers", type=option("num_workers"), default=None, help="DataLoader workers (default: the configs')"
    )
    parser.add_argument("--split_seed", type=option("seed"), default=0)
    parser.add_argument("--pretrain_seed", type=option("seed"), default=0)
    parser.add_argument("--val_fraction", type=option("val_fraction"), default=0.15)
    parser.add_argument("--test_fraction", type=option("test_fraction"), default=0.15)
    parser.add_argument("--force", action="store_true", help="redo steps whose outputs exist")
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the study and print the table and the commands."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if args.val_fraction + args.test_fraction >= 1:
        parser.error(
            f"--val_fraction {args.val_fraction} plus --test_fraction {args.test_fraction} must be below 1 "
            "(the rest is the training split)"
        )
    if not (args.data / "datalist.json").is_file():
        kind = "is not a folder" if not args.data.is_dir() else "has no datalist.json"
        parser.error(f"--data {args.data} {kind}; give a folder with datalist.json (scripts/prepare_dataset.py)")
    args.out = args.out.resolve()
    args.data = args.data.resolve()
    make_output_folder(args.out)

    split = write_split(args.data, args.out, args.split_seed, args.val_fraction, args.test_fraction)
    common: dict[str, Any] = {"datalist": str(split), "dataset_dir": str(args.data), "image_size": args.image_size}
    if args.num_workers is not None:
        common["num_workers"] = args.num_workers
    runner = Runner(args.out, args.dry_run)
    weights = {
        name: pretrain(runner, name, METHODS[name], common, args) if METHODS[name] is not None else None
        for name in args.methods
    }
    results: dict[str, dict[int, dict]] = {}
    for name in args.methods:
        for seed in args.seeds:
            metrics_file = finetune_and_test(runner, name, seed, weights[name], common, args)
            if not args.dry_run:
                results.setdefault(name, {})[seed] = json.loads(metrics_file.read_text())
    report = table(results, args) if results else "(dry run: no results)"
    commands = "\n".join(runner.commands)
    print("\n" + report + "\n\nCommands (from any working directory):\n" + commands, flush=True)
    markdown = report + "\n\n## Commands (from any working directory)\n\n```\n" + commands + "\n```\n"
    (args.out / "results.md").write_text(markdown)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": {
            n: {str(s): {k: m.get(k) for k in ("auc_macro", "dice_lung", "accuracy")} for s, m in r.items()}
            for n, r in results.items()
        },
        "commands": runner.commands,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run_main(main)
