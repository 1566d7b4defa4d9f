"""The label-efficiency study: initialisations x label fractions x seeds x {fine-tuning, linear probe}, one command.

    python scripts/study.py --data <your data> --out runs/study   # reduced CPU default (docs/study.md)
    python scripts/study.py --data <your data> --out runs/study_full --methods all \\
        --image_size 224 --pretrain_epochs 100 --finetune_epochs 30 --batch_size 64 --seeds 0 1 2 \\
        [--natural_weights models/resnet10_imagenet_encoder.pt] [--leave_one_source_out]   # the full GPU setting

1. One patient-grouped split of the datalist (``--split_seed``), ``<out>/split_datalist.json`` with explicit
   training / validation / test sections: every run sees the same test patients; pretraining never sees a
   validation or test image.
2. Initialisations: ``scratch``; ``natural`` (``--natural_weights``, a file for ``--pretrained_ckpt``, e.g. the
   output of scripts/convert_weights.py); each pretraining method of ``--methods`` (``METHODS``; the curriculum of
   configs/pretrain_curriculum.json is ``curriculum``), pretrained ONCE on all training images (labels unused).
3. For each initialisation, label fraction (``--fractions``) and seed, two protocols: ``finetune`` (every weight
   trains) and ``probe`` (configs/train.json ``--freeze_encoder true``: a linear probe on the frozen encoder; the
   classifier and the lung decoder train). Each is then evaluated on the test split (configs/evaluate.json).
4. ``<out>/report.md`` and ``<out>/results.json``: per cell mean, std over seeds and a 95 % bootstrap interval
   over the test images (bundle.evaluation.bootstrap) of macro AUC, accuracy and HM, with lung Dice and the lung
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
import json
import math
import os
import shlex
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle import workflow
from bundle.atomic import atomic_write, atomic_write_json
from bundle.data.datalist import prepare_splits
from bundle.errors import fail, run_main
from bundle.evaluation.bootstrap import SCORES, Predictions, accuracy, bootstrap_interval, macro_auc, read_predictions
from bundle.evaluation.report import PREDICTIONS_FILE
from bundle.settings import option
from bundle.values import output_folder

ROOT = Path(__file__).resolve().parents[1]

CLASS_NAMES = ["normal", "bacterial_pneumonia", "viral_pneumonia", "covid19"]

# where metrics.json keeps the lung attention ratio (attention inside the lungs / the lungs' share of the image,
# mean over the test images): one place to change if the report's layout changes; absent -> NaN ("n/a")
LUNG_ATTENTION_RATIO = ("lung_attention", "lung_attention_ratio", "mean")
# metric -> (label in the report, where metrics.json keeps it)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "auc_macro": ("macro AUC", ("auc_macro",)),
    "accuracy": ("accuracy", ("accuracy",)),
    "hm": ("HM", ("hm",)),
    "dice_lung": ("lung Dice", ("dice_lung",)),
    "lung_attention_ratio": ("lung attention ratio", LUNG_ATTENTION_RATIO),
}
CURVE_METRICS = ("auc_macro", "lung_attention_ratio")
# metrics with a bootstrap interval: those computed from the per-image predictions (test_predictions.csv)
BOOTSTRAPPED = tuple(SCORES)
# protocol -> the configs/train.json ids it sets
PROTOCOLS: dict[str, dict[str, Any]] = {"finetune": {}, "probe": {"freeze_encoder": True}}


def _methods() -> dict[str, dict[str, Any]]:
    """Every pretraining of the bundle: name -> config and the ids it overrides.

    The bundle's registries of contrastive, pretext and inpainting methods, MICLe (SimCLR with multi-instance
    pairs) and the curriculum. Ids every pretraining config shares (datalist, dataset_dir, image_size, batch_size,
    max_epochs, ckpt_dir, output_dir, pretrained_out, seed) are set by this script; for the curriculum
    ``max_epochs`` is the length of EACH stage.
    """
    from bundle.ssl.methods import INPAINTING_METHODS
    from bundle.ssl.methods import METHODS as CONTRASTIVE
    from bundle.ssl.methods import PRETEXT_METHODS

    table: dict[str, dict[str, Any]] = {}
    for names, config in (
        (CONTRASTIVE, "configs/pretrain_contrastive.json"),
        (PRETEXT_METHODS, "configs/pretrain_pretext.json"),
        (INPAINTING_METHODS, "configs/pretrain_inpainting.json"),
    ):
        table.update({n: {"config": config, "overrides": {"ssl_method": n}} for n in names})
    table["micle"] = {
        "config": "configs/pretrain_contrastive.json",
        "overrides": {"ssl_method": "simclr", "multi_instance": True},
    }
    table["curriculum"] = {"config": "configs/pretrain_curriculum.json", "overrides": {}}
    return table


METHODS = _methods()
# the reduced default: one method of each family the papers compare, and the curriculum
DEFAULT_METHODS = ["simclr", "inpainting", "curriculum"]


def make_output_folder(out: Path) -> None:
    """Create ``--out`` (and ``logs``, ``done`` in it), or stop with one message saying why it cannot be."""
    problem = output_folder(out)
    if problem:
        fail(f"--out {out} {problem}")
    try:
        for sub in ("logs", "done"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out {out}: cannot create the folder ({e.strerror or e})", e)
    if not os.access(out, os.W_OK | os.X_OK):
        fail(f"--out {out}: cannot write in it (permission denied)")


def write_datalist(path: Path, sections: dict[str, list[dict]], description: str) -> Path:
    """A datalist with explicit sections (only the fields the runs read), written atomically when it changed."""
    keep = ("image", "mask", "label", "patient", "source")
    content = {"description": description}
    content.update({s: [{k: e[k] for k in keep if e.get(k) is not None} for e in v] for s, v in sections.items()})
    text = json.dumps(content, indent=1)
    if not path.is_file() or path.read_text() != text:  # several studies may share one output folder
        with atomic_write(path, "w") as f:
            f.write(text)
    return path


def write_split(args: argparse.Namespace) -> tuple[Path, dict[str, list[dict]]]:
    """The fixed patient-grouped split, as a datalist with absolute paths and all three sections."""
    splits = prepare_splits(
        args.data / "datalist.json",
        args.data,
        CLASS_NAMES,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.split_seed,
        require_label=True,
    )
    description = f"fixed split of {args.data / 'datalist.json'} (split_seed {args.split_seed}) for scripts/study.py"
    path = write_datalist(args.out / "split_datalist.json", splits, description)
    print(f"split written to {path}: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()) + " images", flush=True)
    return path, splits


def shell_quote(arg: str) -> str:
    """Quote for a POSIX shell, readably: the config list goes in double quotes as the docs write it."""
    if shlex.quote(arg) == arg:
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


class Runner:
    """Runs bundle commands, logs them, remembers every command for the report; skips steps that finished."""

    def __init__(self, out: Path, dry_run: bool = False) -> None:
        self.out, self.dry_run = out, dry_run
        self.commands: list[str] = []
        self.ran: list[str] = []

    def __call__(self, name: str, cmd: list[str], output: Path, redo: bool) -> bool:
        """Run step ``name`` unless it finished before (its marker and ``output`` exist) and not ``redo``.

        Returns True when the step ran (so the steps that read its output must run again too).
        """
        shown = " ".join(shell_quote(c) for c in ["python"] + cmd[1:])
        self.commands.append(shown)
        marker = self.out / "done" / f"{name}.json"
        if marker.is_file() and output.exists() and not redo:
            print(f"[skip] {name}: finished before ({output})", flush=True)
            return False
        print(f"[run ] {name}: {shown}", flush=True)
        if self.dry_run:
            return True
        log = self.out / "logs" / f"{name}.log"
        start = time.time()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log, "w") as f:
            proc = subprocess.run(cmd, cwd=self.out, stdout=f, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0 or not output.exists():
            tail = log.read_text()[-3000:]
            fail(f"{name} failed (exit {proc.returncode}, {output} missing); log {log}:\n{tail}")
        seconds = time.time() - start
        atomic_write_json({"command": shown, "seconds": round(seconds, 1), "output": str(output)}, marker)
        self.ran.append(name)
        print(f"       done in {seconds:.0f} s", flush=True)
        return True


def pretrain(runner: Runner, name: str, common: dict, args: argparse.Namespace) -> tuple[Path, bool]:
    """Pretrain ``name`` once on all training images; returns its weights and whether it ran now."""
    spec = METHODS[name]
    folder = args.out / "pretrain" / name
    weights = folder / f"pretrained_{name}.pt"
    overrides = {
        **common,
        "batch_size": args.pretrain_batch_size or args.batch_size,
        "max_epochs": args.pretrain_epochs,
        "ckpt_dir": str(folder),
        "pretrained_out": str(weights),
        "seed": args.pretrain_seed,
    }
    if name == "curriculum":
        overrides["output_root"] = str(folder / "stages")
    else:
        overrides["output_dir"] = str(folder / "eval")
    overrides.update(spec["overrides"])
    ran = runner(f"pretrain_{name}", workflow.command(spec["config"], overrides), weights, args.force)
    return weights, ran


def train_and_test(
    runner: Runner,
    tag: str,
    folder: Path,
    train_ids: dict[str, Any],
    weights: Path | None,
    redo: bool,
    test_ids: dict[str, Any] | None = None,
) -> Path:
    """configs/train.json with ``train_ids`` from ``weights``, then configs/evaluate.json; returns metrics.json.

    A redone fine-tuning starts over (``resume False``); an interrupted one continues from its checkpoint.
    """
    overrides = {**train_ids, "ckpt_dir": str(folder / "models"), "output_dir": str(folder / "train")}
    if weights is not None:
        overrides["pretrained_ckpt"] = str(weights)
    if redo:
        overrides["resume"] = False
    ran = runner(
        f"train_{tag}", workflow.command("configs/train.json", overrides), folder / "models" / "model.pt", redo
    )
    test = {**overrides, **(test_ids or {}), "output_dir": str(folder / "test"), "n_overlays": 0}
    for key in ("pretrained_ckpt", "resume", "freeze_encoder"):  # evaluation loads the fine-tuned model.pt
        test.pop(key, None)
    metrics = folder / "test" / "metrics.json"
    runner(f"test_{tag}", workflow.command(["configs/train.json", "configs/evaluate.json"], test), metrics, redo or ran)
    return metrics


def metric_value(metrics: dict, path: Sequence[str]) -> float:
    """The number at ``path`` in a metrics.json, NaN when it is absent or null."""
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def cell_summary(per_seed: dict[int, dict], predictions: list[Predictions], args: argparse.Namespace) -> dict:
    """Per metric: values per seed, mean, std over seeds, and the bootstrap interval where predictions allow."""
    summary = {}
    for name, (_, path) in METRICS.items():
        values = [metric_value(m, path) for m in per_seed.values()]
        good = [v for v in values if not math.isnan(v)]
        entry = {
            "per_seed": {str(s): (None if math.isnan(v) else v) for s, v in zip(per_seed, values)},
            "mean": statistics.mean(good) if good else None,
            "std": statistics.stdev(good) if len(good) > 1 else None,
            "interval": None,
        }
        if name in BOOTSTRAPPED and predictions:
            low, high = bootstrap_interval(predictions, name, n_resamples=args.bootstrap, seed=args.split_seed)
            entry["interval"] = None if math.isnan(low) else [low, high]
        summary[name] = entry
    return summary


def format_entry(entry: dict) -> str:
    """``mean ± std [low, high]``; ``n/a`` when undefined."""
    if entry["mean"] is None:
        return "n/a"
    text = f"{entry['mean']:.3f}"
    if entry["std"] is not None:
        text += f" ± {entry['std']:.3f}"
    if entry["interval"] is not None:
        text += f" [{entry['interval'][0]:.3f}, {entry['interval'][1]:.3f}]"
    return text


def results_table(cells: dict, args: argparse.Namespace) -> str:
    """The markdown table: one row per protocol, initialisation and fraction."""
    header = "| protocol | initialisation | labels | " + " | ".join(label for label, _ in METRICS.values()) + " |"
    lines = [header, "|" + " --- |" * (3 + len(METRICS))]
    for protocol in args.protocols:
        for init in args.inits:
            for fraction in args.fractions:
                cell = cells.get(f"{protocol}/{init}/{fraction}")
                if cell is None:
                    continue
                values = " | ".join(format_entry(cell["metrics"][m]) for m in METRICS)
                lines.append(f"| {protocol} | {init} | {fraction:g} | {values} |")
    return "\n".join(lines)


def draw_curves(cells: dict, args: argparse.Namespace) -> list[Path]:
    """One PNG per protocol and curve metric: metric against label fraction, a line per initialisation."""
    from bundle.plots import plot_label_efficiency

    paths = []
    for protocol in args.protocols:
        for metric in CURVE_METRICS:
            curves = {}
            for init in args.inits:
                entries = [cells[f"{protocol}/{init}/{f}"]["metrics"][metric] for f in args.fractions]
                nan = float("nan")
                curves[init] = {
                    "fraction": list(args.fractions),
                    "mean": [nan if e["mean"] is None else e["mean"] for e in entries],
                    "low": [nan if e["interval"] is None else e["interval"][0] for e in entries],
                    "high": [nan if e["interval"] is None else e["interval"][1] for e in entries],
                }
            path = args.out / "curves" / f"{protocol}_{metric}.png"
            title = f"{METRICS[metric][0]}, {protocol} ({'95 % bootstrap band' if metric in BOOTSTRAPPED else 'mean'})"
            paths.append(Path(plot_label_efficiency(curves, METRICS[metric][0], str(path), title)))
    return paths


def per_source_scores(pred: Predictions, sources: dict[str, str], source: str) -> dict:
    """Accuracy, mean probability of the true class and macro AUC (None where undefined) on ``source``'s images."""
    keep = np.array([sources.get(i) == source for i in pred.images])
    if not keep.any():
        return {"images": 0, "accuracy": None, "true_class_prob": None, "auc_macro": None}
    p = pred.subset(keep)
    auc = float(macro_auc(p.prob[None], p.truth[None])[0])
    return {
        "images": int(keep.sum()),
        "accuracy": float(accuracy(p.prob[None], p.truth[None])[0]),
        "true_class_prob": float((p.prob * p.truth).sum(1).mean()),
        "auc_macro": None if math.isnan(auc) else auc,
    }


def leave_one_source_out(
    runner: Runner, args: argparse.Namespace, splits: dict, common: dict, weights: dict, cells: dict
) -> list[dict]:
    """Per source with enough images: train without it, test on it; against the in-distribution model."""
    everything = [e for section in splits.values() for e in section]
    counts: dict[str, int] = {}
    for e in everything:
        counts[e.get("source") or "unknown"] = counts.get(e.get("source") or "unknown", 0) + 1
    chosen = [s for s, n in sorted(counts.items()) if n >= args.loso_min_images and s != "unknown"]
    init = args.loso_init
    if init == "best":
        auc = {i: cells.get(f"finetune/{i}/1.0", {}).get("metrics", {}).get("auc_macro", {}) for i in args.inits}
        ranked = sorted((v["mean"], i) for i, v in auc.items() if v.get("mean") is not None)
        init = ranked[-1][1] if ranked else args.inits[0]
    args.loso_init_used = init
    seed = args.seeds[0]
    print(f"leave one source out: {len(chosen)} sources with >= {args.loso_min_images} images, init {init}", flush=True)
    base = {**common, "batch_size": args.batch_size, "max_epochs": args.finetune_epochs, "seed": seed}
    in_dist = args.out / "runs" / "finetune" / init / "frac1" / f"seed{seed}" / "test" / PREDICTIONS_FILE
    rows = []
    for source in chosen:
        slug = "".join(c if c.isalnum() else "_" for c in source)
        sections = {s: [e for e in splits[s] if e.get("source") != source] for s in ("training", "validation")}
        sections["test"] = [e for e in everything if e.get("source") == source]
        datalist = write_datalist(
            args.out / "loso" / f"datalist_{slug}.json", sections, f"training without source {source}, test on it"
        )
        folder = args.out / "loso" / slug
        metrics = train_and_test(
            runner, f"loso_{slug}", folder, {**base, "datalist": str(datalist)}, weights[init], args.force
        )
        row = {"source": source, "images": len(sections["test"]), "classes": {}}
        for e in sections["test"]:
            name = CLASS_NAMES[int(e["label"])]
            row["classes"][name] = row["classes"].get(name, 0) + 1
        if not args.dry_run:
            sources = {e["image"]: e.get("source") for e in everything}  # the split's absolute image paths
            row["held_out"] = per_source_scores(read_predictions(metrics.parent / PREDICTIONS_FILE), sources, source)
            row["in_distribution"] = per_source_scores(read_predictions(in_dist), sources, source)
            drops = {}
            for key in ("accuracy", "true_class_prob", "auc_macro"):
                a, b = row["in_distribution"][key], row["held_out"][key]
                drops[key] = None if a is None or b is None else a - b
            row["drop"] = drops
        rows.append(row)
    return rows


def loso_table(rows: list[dict]) -> str:
    """Markdown: per source the in-distribution and held-out scores and the drop."""

    def show(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "| source | images (classes) | test images in-dist. | accuracy in-dist. / held out (drop) | "
        "p(true class) in-dist. / held out (drop) | macro AUC in-dist. / held out |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "held_out" not in r:
            continue
        i, h, d = r["in_distribution"], r["held_out"], r["drop"]
        classes = ", ".join(f"{k} {v}" for k, v in r["classes"].items())
        lines.append(
            f"| {r['source']} | {r['images']} ({classes}) | {i['images']} | {show(i['accuracy'])} / "
            f"{show(h['accuracy'])} ({show(d['accuracy'])}) | {show(i['true_class_prob'])} / "
            f"{show(h['true_class_prob'])} ({show(d['true_class_prob'])}) | {show(i['auc_macro'])} / "
            f"{show(h['auc_macro'])} |"
        )
    return "\n".join(lines)


def write_report(
    args: argparse.Namespace, cells: dict, curves: list[Path], loso: list[dict], commands: list[str]
) -> str:
    """``<out>/report.md``: settings, the table, the curves, the leave-one-source-out table, every command."""
    lines = [
        "# Label-efficiency study",
        "",
        f"Data: {args.data} (patient-grouped split, split_seed {args.split_seed}: {args.split_counts}); "
        f"backbone {args.backbone or 'of the configs'}; {args.image_size} px; "
        f"{args.pretrain_epochs} pretraining / {args.finetune_epochs} fine-tuning epochs; "
        f"seeds {', '.join(map(str, args.seeds))}.",
        "",
        "Each cell: mean ± standard deviation over seeds [95 % bootstrap interval over the test images, "
        f"{args.bootstrap} resamples, seeds averaged within each resample] on the test split. Intervals only for "
        "the scores computed from the per-image predictions (macro AUC, accuracy, HM); lung Dice and the lung "
        "attention ratio (share of the saliency inside the lungs / the lungs' share of the image; 1 = chance) are "
        "mean ± std. `probe` is a linear probe on the frozen encoder (the lung decoder trains too).",
        "",
        results_table(cells, args),
        "",
        "## Curves",
        "",
    ]
    lines += [f"![{p.stem}]({p.relative_to(args.out).as_posix()})" for p in curves]
    if loso:
        lines += [
            "",
            "## Leave one source out",
            "",
            f"Fine-tuning with 100 % of the labels, initialisation {args.loso_init_used}, seed {args.seeds[0]}, "
            "without the source; tested on all its images. In-distribution: the model trained on every source, "
            "on that source's images of the test split. Many sources hold one class, where AUC is undefined (n/a): "
            "accuracy and the mean probability of the true class are the comparable scores. A drop means the "
            "model relied on what is specific to the source (site, device, population), not only on the disease.",
            "",
            loso_table(loso),
        ]
    lines += ["", "## Commands (from any working directory)", "", "```", *commands, "```", ""]
    text = "\n".join(lines)
    with atomic_write(args.out / "report.md", "w") as f:
        f.write(text)
    return text


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
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        help=f"pretraining methods, 'all', or 'none' (default: %(default)s); any of {', '.join(METHODS)}",
    )
    parser.add_argument("--no_scratch", action="store_true", help="leave out the scratch initialisation")
    parser.add_argument(
        "--natural_weights", type=Path, default=None, help="natural-image encoder weights (scripts/convert_weights.py)"
    )
    parser.add_argument(
        "--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS), help="default: both"
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


def check_natural_weights(path: Path, backbone: str | None = None) -> None:
    """Stop with one message unless ``path`` loads into the fine-tuning network (as ``--pretrained_ckpt`` would)."""
    from bundle.checkpoints import load_pretrained
    from bundle.networks import MultiTaskNet

    if not path.is_file():
        fail(f"--natural_weights {path}: no such file (convert torchvision weights with scripts/convert_weights.py)")
    backbone = backbone or json.loads((ROOT / "configs" / "train.json").read_text())["backbone"]
    load_pretrained(MultiTaskNet(len(CLASS_NAMES), backbone=backbone), path, name="--natural_weights")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse's per-value checks cannot see: names, combinations, files."""
    methods = list(METHODS) if args.methods == ["all"] else [] if args.methods == ["none"] else args.methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown method(s) {unknown}; known: {', '.join(METHODS)}, or all / none")
    args.methods = list(dict.fromkeys(methods))
    args.inits = (["scratch"] if not args.no_scratch else []) + (["natural"] if args.natural_weights else [])
    args.inits += args.methods
    if not args.inits:
        parser.error("--methods none with --no_scratch and no --natural_weights leaves no initialisation to study")
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
        check_natural_weights(args.natural_weights, args.backbone)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the study; write report.md, results.json and the curves; return the summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    args.out, args.data = args.out.resolve(), args.data.resolve()
    if args.natural_weights is not None:  # the runs start in --out
        args.natural_weights = args.natural_weights.resolve()
    make_output_folder(args.out)

    split, splits = write_split(args)
    args.split_counts = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    common: dict[str, Any] = {"datalist": str(split), "dataset_dir": str(args.data), "image_size": args.image_size}
    if args.num_workers is not None:
        common["num_workers"] = args.num_workers
    if args.backbone is not None:
        common["backbone"] = args.backbone
    runner = Runner(args.out, args.dry_run)
    weights: dict[str, Path | None] = {"scratch": None, "natural": args.natural_weights}
    redo: dict[str, bool] = {"scratch": args.force, "natural": args.force}
    for name in args.methods:
        weights[name], redo[name] = pretrain(runner, name, common, args)
        redo[name] = redo[name] or args.force

    cells: dict[str, dict] = {}
    for protocol in args.protocols:
        for init in args.inits:
            for fraction in args.fractions:
                per_seed, predictions = {}, []
                for seed in args.seeds:
                    folder = args.out / "runs" / protocol / init / f"frac{fraction:g}" / f"seed{seed}"
                    ids = {
                        **common,
                        **PROTOCOLS[protocol],
                        "batch_size": args.batch_size,
                        "max_epochs": args.finetune_epochs,
                        "label_fraction": fraction,
                        "seed": seed,
                    }
                    tag = f"{protocol}_{init}_frac{fraction:g}_seed{seed}"
                    metrics = train_and_test(runner, tag, folder, ids, weights[init], redo[init])
                    if not args.dry_run:
                        per_seed[seed] = json.loads(metrics.read_text())
                        predictions.append(read_predictions(metrics.parent / PREDICTIONS_FILE))
                if not args.dry_run:
                    cells[f"{protocol}/{init}/{fraction}"] = {
                        "protocol": protocol,
                        "init": init,
                        "fraction": fraction,
                        "metrics": cell_summary(per_seed, predictions, args),
                    }
    loso: list[dict] = []
    args.loso_init_used = args.loso_init
    if args.leave_one_source_out:
        loso = leave_one_source_out(runner, args, splits, common, weights, cells)
    if args.dry_run:
        print("\n(dry run: no results)\n\nCommands (from any working directory):\n" + "\n".join(runner.commands))
        atomic_write_json({"commands": runner.commands, "dry_run": True}, args.out / "results.json")
        return {"commands": runner.commands}
    curves = draw_curves(cells, args)
    report = write_report(args, cells, curves, loso, runner.commands)
    print("\n" + report, flush=True)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "metrics": {m: label for m, (label, _) in METRICS.items()},
        "cells": cells,
        "leave_one_source_out": loso,
        "curves": [str(p) for p in curves],
        "commands": runner.commands,
        "ran": runner.ran,
    }
    atomic_write_json(summary, args.out / "results.json")
    return summary


if __name__ == "__main__":
    run_main(main)
