"""The label-efficiency study: initialisations x label fractions x seeds x {fine-tuning, linear probe}, one command.

    python scripts/study.py --data <your data> --out runs/study   # reduced CPU default (docs/study.md)
    python scripts/study.py --data <your data> --out runs/study_full --methods all \\
        --image_size 224 --pretrain_epochs 100 --finetune_epochs 30 --batch_size 64 --seeds 0 1 2 \\
        [--natural_weights models/resnet10_imagenet_encoder.pt] [--leave_one_source_out]   # the full GPU setting

1. One patient-grouped split of the datalist (``--split_seed``), ``<out>/split_datalist.json`` with explicit
   training / validation / test sections: every run sees the same test patients; pretraining never sees a
   validation or test image.
2. Initialisations: ``scratch``; ``natural`` (``--natural_weights``, a file for ``--pretrained_ckpt``, e.g. the
   output of scripts/convert_weights.py); one per ``--init_file NAME=PATH`` (a converted published encoder such as
   RAD-DINO, its recipe's ``vit_pool`` applied to its runs; its backbone must be ``--backbone``); each pretraining
   method of ``--methods`` (``METHODS``; the curriculum of configs/pretrain_curriculum.json is ``curriculum``),
   pretrained ONCE on all training images (labels unused).
3. For each initialisation, label fraction (``--fractions``) and seed, two protocols: ``finetune`` (every weight
   trains) and ``probe`` (configs/train.json ``--freeze_encoder true``: a linear probe on the frozen encoder; the
   classifier and the lung decoder train), in each training variant of ``--variants``: ``unguided``
   (the configs' default, ``w_lung_guidance 0``; its rows keep the initialisation's name), ``lung_guided`` and
   ``lungs_only``. Each is then evaluated on the test split (configs/evaluate.json).
4. ``<out>/report.md`` and ``<out>/results.json``: per cell mean, std over seeds and a 95 % bootstrap interval
   over the test patients (bundle.evaluation.bootstrap) of macro AUC, accuracy, HM and lung Dice, with the lung
   attention ratio (mean +- std); label-efficiency curves ``<out>/curves/*.png``; every command.
5. ``--leave_one_source_out``: per datalist ``source`` with ``--loso_min_images`` images or more, fine-tuning
   (100 % labels, ``--loso_init``) without that source, tested on its images, against the model trained on all
   sources tested on that source's images of the test split.

Every step is a ``python -m monai.bundle run ...`` subprocess (printed as it starts; logs under ``<out>/logs``).
A step that finished is skipped when the study runs again (a marker under ``<out>/done``); a fine-tuning that was
interrupted continues from its checkpoint (configs/train.json ``resume``); ``--force`` redoes everything. Every
option is checked before the first step: a bad value stops with one message naming it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bundle.errors import run_main
from bundle.evaluation import study
from bundle.settings import option

ROOT = Path(__file__).resolve().parents[1]


def init_file(value: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (NAME, PATH); NAME becomes a folder and a column of the report: letters, digits, _ and -."""
    name, sep, path = value.partition("=")
    if not sep or not path or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise argparse.ArgumentTypeError(f"{value!r}: give NAME=PATH, NAME of letters, digits, _ and -")
    return name, Path(path)


def add_initialisation_arguments(parser: argparse.ArgumentParser) -> None:
    """What each row of the study starts from and how it trains: the pretraining methods, scratch, natural
    weights, converted published encoders and the training variants."""
    parser.add_argument(
        "--methods",
        nargs="+",
        default=study.DEFAULT_METHODS,
        help=f"pretraining methods, 'all', or 'none' (default: %(default)s); any of {', '.join(study.METHODS)}",
    )
    parser.add_argument("--no_scratch", action="store_true", help="leave out the scratch initialisation")
    parser.add_argument(
        "--natural_weights", type=Path, default=None, help="natural-image encoder weights (scripts/convert_weights.py)"
    )
    parser.add_argument(
        "--init_file",
        action="append",
        type=init_file,
        default=[],
        metavar="NAME=PATH",
        help="one more initialisation NAME from a converted encoder file (repeatable; scripts/convert_weights.py)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[study.PLAIN_ROW],
        choices=list(study.VARIANTS),
        help="training variants, each a row per initialisation (default: %(default)s, the configs' default)",
    )
    parser.add_argument(
        "--w_lung_guidance",
        type=option("w_lung_guidance"),
        default=1.0,
        help="the lung_guided variant's weight of the lung-guidance loss (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line; every value is range-checked at parsing, before any step runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "cxr-real",
        help="folder with datalist.json (labels, patients, masks, sources)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "study")
    add_initialisation_arguments(parser)
    parser.add_argument(
        "--protocols", nargs="+", default=list(study.PROTOCOLS), choices=list(study.PROTOCOLS), help="default: both"
    )
    parser.add_argument("--fractions", nargs="+", type=option("label_fraction"), default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=option("seed"), default=[0])
    parser.add_argument("--image_size", type=option("image_size"), default=32, help="default 32 (GPU: 224)")
    parser.add_argument(
        "--backbone", type=option("backbone"), default=None, help="every run's encoder (default: the configs')"
    )
    parser.add_argument("--pretrain_epochs", type=option("max_epochs"), default=2)
    parser.add_argument("--finetune_epochs", type=option("max_epochs"), default=3)
    parser.add_argument("--batch_size", type=option("batch_size"), default=32, help="fine-tuning batch size")
    parser.add_argument("--pretrain_batch_size", type=option("batch_size"), default=None, help="default: --batch_size")
    parser.add_argument(
        "--num_workers", type=option("num_workers"), default=None, help="DataLoader workers (default: the configs')"
    )
    parser.add_argument("--split_seed", type=option("seed"), default=0)
    parser.add_argument("--pretrain_seed", type=option("seed"), default=0)
    parser.add_argument("--val_fraction", type=option("val_fraction"), default=0.15)
    parser.add_argument("--test_fraction", type=option("test_fraction"), default=0.15)
    parser.add_argument(
        "--bootstrap", type=option("max_epochs"), default=1000, help="bootstrap resamples (default: %(default)s)"
    )
    parser.add_argument("--leave_one_source_out", action="store_true", help="also the leave-one-source-out runs")
    parser.add_argument("--loso_min_images", type=option("batch_size"), default=20, help="default: %(default)s")
    parser.add_argument(
        "--loso_init", default="best", help="initialisation for leave-one-source-out, or 'best' (fine-tuning AUC)"
    )
    parser.add_argument("--force", action="store_true", help="redo steps that finished")
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse's per-value checks cannot see: names, combinations, files."""
    methods = list(study.METHODS) if args.methods == ["all"] else [] if args.methods == ["none"] else args.methods
    unknown = [m for m in methods if m not in study.METHODS]
    if unknown:
        parser.error(f"--methods: unknown method(s) {unknown}; known: {', '.join(study.METHODS)}, or all / none")
    args.methods = list(dict.fromkeys(methods))
    args.inits = (["scratch"] if not args.no_scratch else []) + (["natural"] if args.natural_weights else [])
    args.init_files = dict(args.init_file)
    taken = [n for n in args.init_files if n in ("scratch", "natural", *study.METHODS)]
    if taken or len(args.init_files) < len(args.init_file):
        parser.error(
            f"--init_file: the names must differ from each other and from {', '.join(args.inits + args.methods)}"
        )
    args.inits += list(args.init_files) + args.methods
    if not args.inits:
        parser.error(
            "--methods none with --no_scratch and no --natural_weights or --init_file leaves no initialisation to study"
        )
    args.variants = list(dict.fromkeys(args.variants))
    args.rows = [row for row, _, _ in study.arms(args.inits, args.variants)]
    args.fractions = sorted({float(f) for f in args.fractions})
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.val_fraction + args.test_fraction >= 1:
        parser.error(
            f"--val_fraction {args.val_fraction} plus --test_fraction {args.test_fraction} must be below 1 "
            "(the rest is the training split)"
        )
    if args.loso_init != "best" and args.loso_init not in args.inits:
        parser.error(f"--loso_init {args.loso_init}: not one of this study's initialisations {args.inits} or best")
    if args.leave_one_source_out and ("finetune" not in args.protocols or 1.0 not in args.fractions):
        parser.error(
            "--leave_one_source_out compares with fine-tuning on 100 % of the labels: keep --protocols "
            "finetune and the fraction 1 in --fractions"
        )
    if not (args.data / "datalist.json").is_file():
        kind = "is not a folder" if not args.data.is_dir() else "has no datalist.json"
        parser.error(f"--data {args.data} {kind}; give a folder with datalist.json (scripts/prepare_dataset.py)")
    if args.natural_weights is not None:
        study.check_natural_weights(args.natural_weights, args.backbone)
    for name, path in args.init_files.items():
        study.check_init_file(name, path, args.backbone)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the study; write report.md, results.json and the curves; return the summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return study.run(args)


if __name__ == "__main__":
    run_main(main)
