"""The label-efficiency study: initialisations x training variants x label fractions x seeds x {fine-tuning,
linear probe}.

``scripts/study.py`` is its command line (docs/study.md); the ``args`` the functions here take are that command
line's settings, checked. The study writes one patient-grouped split (``write_split``), pretrains each method of
``METHODS`` once, fine-tunes and tests every cell of the grid (``run_grid``), and optionally trains without each
source in turn (``leave_one_source_out``). Every step is a ``python -m monai.bundle run`` process
(``bundle.workflow.command``), run by ``ResumableSteps``, which skips the steps that finished in an earlier run.
``bundle.evaluation.study_report`` turns the runs' metrics into the tables, the curves and ``report.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import workflow
from ..atomic import atomic_write, atomic_write_json, make_folder, write_failed
from ..checkpoints import load_pretrained, read_recipe
from ..data.datalist import prepare_splits
from ..errors import fail
from ..networks import MultiTaskNet
from ..ssl.methods import INPAINTING_METHODS
from ..ssl.methods import METHODS as CONTRASTIVE
from ..ssl.methods import PRETEXT_METHODS
from ..values import output_folder
from . import study_report
from .bootstrap import read_predictions
from .report import PREDICTIONS_FILE

__all__ = [
    "PROTOCOLS",
    "VARIANTS",
    "arms",
    "METHODS",
    "DEFAULT_METHODS",
    "class_names",
    "make_output_folder",
    "check_natural_weights",
    "check_init_file",
    "write_datalist",
    "write_split",
    "shell_quote",
    "ResumableSteps",
    "pretrain",
    "pretrain_all",
    "train_and_test",
    "run_grid",
    "leave_one_source_out",
    "prepare",
    "write_results",
    "run",
]

# protocol -> the configs/train.json ids it sets
PROTOCOLS: dict[str, dict[str, Any]] = {"finetune": {}, "probe": {"freeze_encoder": True}}
# training variant -> the configs/train.json ids it sets (``lung_guided``'s weight is ``--w_lung_guidance``); each
# sets lung guidance itself, so a row means the same whatever the configs' default
VARIANTS: dict[str, dict[str, Any]] = {
    "unguided": {"w_lung_guidance": 0.0},
    "lungs_only": {"lungs_only": True, "w_lung_guidance": 0.0},
    "lung_guided": {"w_lung_guidance": 1.0},
}
PLAIN_ROW = "unguided"  # its rows keep the initialisation's name: every study before lung guidance trained so


def arms(inits: list[str], variants: list[str]) -> list[tuple[str, str, str]]:
    """``(row, initialisation, variant)`` for every initialisation and variant: the row is the initialisation's
    name for the ``unguided`` variant (so earlier studies' folders and cells keep theirs), ``<init>+<variant>``
    otherwise."""
    return [(i if v == PLAIN_ROW else f"{i}+{v}", i, v) for i in inits for v in variants]


def variant_ids(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """The configs/train.json ids of ``variant``, with ``--w_lung_guidance`` for the lung-guided one."""
    ids = dict(VARIANTS[variant])
    if variant == "lung_guided":
        ids["w_lung_guidance"] = args.w_lung_guidance
    return ids


def _methods() -> dict[str, dict[str, Any]]:
    """Every pretraining of the bundle: name -> config and the ids it overrides.

    The bundle's registries of contrastive, pretext and inpainting methods, MICLe (SimCLR with multi-instance
    pairs) and the curriculum. Ids every pretraining config shares (datalist, dataset_dir, image_size, batch_size,
    max_epochs, ckpt_dir, output_dir, pretrained_out, seed) are set by the study; for the curriculum
    ``max_epochs`` is the length of EACH stage.
    """
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


@functools.lru_cache(maxsize=None)
def _train_config(name: str) -> Any:
    return workflow.parsed("train", None, name)[0]


def class_names() -> list[str]:
    """The classes of configs/train.json, in the order of the labels: those every run of the study trains."""
    return list(_train_config("class_names"))


def make_output_folder(out: Path) -> None:
    """Create ``--out`` (and ``logs``, ``done`` in it), or stop with one message saying why it cannot be."""
    problem = output_folder(out)
    if problem:
        fail(f"--out {out} {problem}")
    for sub in ("logs", "done"):
        make_folder(out / sub, f"the {sub} folder of --out", "or pass another --out, then rerun")
    if not os.access(out, os.W_OK | os.X_OK):
        fail(f"--out {out}: cannot write in it (permission denied)")


def check_natural_weights(path: Path, backbone: str | None = None) -> None:
    """Stop with one message unless ``path`` loads into the fine-tuning network (as ``--pretrained_ckpt`` would)."""
    if not path.is_file():
        fail(f"--natural_weights {path}: no such file (convert torchvision weights with scripts/convert_weights.py)")
    backbone = backbone or _train_config("backbone")
    load_pretrained(MultiTaskNet(len(class_names()), backbone=backbone), path, name="--natural_weights")


def check_init_file(name: str, path: Path, backbone: str | None = None) -> None:
    """Stop with one message unless ``--init_file NAME=PATH`` fits the study: its recipe's backbone is the study's
    (``--backbone``) and it loads into the fine-tuning network with the recipe's ``vit_pool``, as its runs will
    (configs/train.json takes ``vit_pool`` from the recipe of ``--pretrained_ckpt``)."""
    option = f"--init_file {name}={path}"
    if not path.is_file():
        fail(f"{option}: no such file (convert published weights with scripts/convert_weights.py)")
    recipe = read_recipe(str(path), option)
    backbone = backbone or _train_config("backbone")
    if recipe.get("backbone", backbone) != backbone:
        fail(
            f"{option} is a {recipe['backbone']} encoder (its recipe), the study's runs use {backbone}: pass "
            f"--backbone {recipe['backbone']} (every initialisation of a study shares one backbone)"
        )
    network = MultiTaskNet(len(class_names()), backbone=backbone, vit_pool=recipe.get("vit_pool", "mean"))
    load_pretrained(network, path, name=option)


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


def write_split(
    data: Path, out: Path, val_fraction: float, test_fraction: float, split_seed: int
) -> tuple[Path, dict[str, list[dict]]]:
    """The fixed patient-grouped split of ``data/datalist.json``, as ``out/split_datalist.json`` with absolute
    paths and all three sections; returns its path and the sections."""
    splits = prepare_splits(
        data / "datalist.json",
        data,
        class_names(),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=split_seed,
        require_label=True,
    )
    description = f"fixed split of {data / 'datalist.json'} (split_seed {split_seed}) for scripts/study.py"
    path = write_datalist(out / "split_datalist.json", splits, description)
    print(f"split written to {path}: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()) + " images", flush=True)
    return path, splits


def shell_quote(arg: str) -> str:
    """Quote for a POSIX shell, readably: the config list goes in double quotes as the docs write it."""
    if shlex.quote(arg) == arg:
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def _datalist_newer(cmd: list[str], marker: Path) -> bool:
    """Whether the ``--datalist`` of ``cmd`` was written after ``marker`` (False without one)."""
    if "--datalist" not in cmd[:-1]:
        return False
    datalist = Path(cmd[cmd.index("--datalist") + 1])
    return datalist.is_file() and datalist.stat().st_mtime > marker.stat().st_mtime


class ResumableSteps:
    """Runs the study's steps (a command each), logs them, remembers every command for the report, and skips a
    step that finished in an earlier run (its marker under ``<out>/done`` and its output exist) unless its
    ``--datalist`` changed since (``write_datalist`` rewrites a datalist only when its content changes)."""

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
        changed = marker.is_file() and _datalist_newer(cmd, marker)
        if marker.is_file() and output.exists() and not redo and not changed:
            print(f"[skip] {name}: finished before ({output})", flush=True)
            return False
        if changed:
            print(f"[redo] {name}: its datalist changed after it finished", flush=True)
        print(f"[run ] {name}: {shown}", flush=True)
        if self.dry_run:
            return True
        log = self.out / "logs" / f"{name}.log"
        start = time.time()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            f = open(log, "w")
        except OSError as e:  # the step itself reports its own failures to write
            write_failed(log, e, f"the log of {name}", "the results of the earlier steps are kept")
        with f:
            proc = subprocess.run(cmd, cwd=self.out, stdout=f, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0 or not output.exists():
            tail = log.read_text()[-3000:]
            fail(f"{name} failed (exit {proc.returncode}, {output} missing); log {log}:\n{tail}")
        seconds = time.time() - start
        atomic_write_json({"command": shown, "seconds": round(seconds, 1), "output": str(output)}, marker)
        self.ran.append(name)
        print(f"       done in {seconds:.0f} s", flush=True)
        return True


def pretrain(steps: ResumableSteps, name: str, common: dict, args: argparse.Namespace) -> tuple[Path, bool]:
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
    ran = steps(f"pretrain_{name}", workflow.command(spec["config"], overrides), weights, args.force)
    return weights, ran


def pretrain_all(
    steps: ResumableSteps, common: dict, args: argparse.Namespace
) -> tuple[dict[str, Path | None], dict[str, bool]]:
    """Every initialisation's weights (None: scratch) and whether the runs from it must be redone."""
    weights: dict[str, Path | None] = {"scratch": None, "natural": args.natural_weights, **args.init_files}
    redo: dict[str, bool] = {name: args.force for name in weights}
    for name in args.methods:
        weights[name], redo[name] = pretrain(steps, name, common, args)
        redo[name] = redo[name] or args.force
    return weights, redo


def train_and_test(
    steps: ResumableSteps,
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
    ran = steps(f"train_{tag}", workflow.command("configs/train.json", overrides), folder / "models" / "model.pt", redo)
    test = {**overrides, **(test_ids or {}), "output_dir": str(folder / "test"), "n_overlays": 0}
    for key in ("pretrained_ckpt", "resume", "freeze_encoder"):  # evaluation loads the fine-tuned model.pt
        test.pop(key, None)
    metrics = folder / "test" / "metrics.json"
    steps(f"test_{tag}", workflow.command(["configs/train.json", "configs/evaluate.json"], test), metrics, redo or ran)
    return metrics


def run_grid(
    steps: ResumableSteps, common: dict, weights: dict, redo: dict, args: argparse.Namespace
) -> dict[str, dict]:
    """Fine-tune and test every protocol x initialisation x variant x fraction x seed; the cells (none in a dry
    run), keyed ``<protocol>/<row>/<fraction>`` (``arms`` names the rows)."""
    cells: dict[str, dict] = {}
    for protocol in args.protocols:
        for row, init, variant in arms(args.inits, args.variants):
            for fraction in args.fractions:
                per_seed, predictions = {}, []
                for seed in args.seeds:
                    folder = args.out / "runs" / protocol / row / f"frac{fraction:g}" / f"seed{seed}"
                    ids = {
                        **common,
                        **PROTOCOLS[protocol],
                        **variant_ids(variant, args),
                        "batch_size": args.batch_size,
                        "max_epochs": args.finetune_epochs,
                        "label_fraction": fraction,
                        "seed": seed,
                    }
                    tag = f"{protocol}_{row}_frac{fraction:g}_seed{seed}"
                    metrics = train_and_test(steps, tag, folder, ids, weights[init], redo[init])
                    if not args.dry_run:
                        per_seed[seed] = json.loads(metrics.read_text())
                        predictions.append(read_predictions(metrics.parent / PREDICTIONS_FILE))
                if not args.dry_run:
                    cells[f"{protocol}/{row}/{fraction}"] = {
                        "protocol": protocol,
                        "init": init,
                        "variant": variant,
                        "fraction": fraction,
                        "metrics": study_report.cell_summary(per_seed, predictions, args.bootstrap, args.split_seed),
                    }
    return cells


def _loso_sources(everything: list[dict], min_images: int) -> list[str]:
    """The sources with ``min_images`` images or more, sorted (entries without a source are not one)."""
    counts: dict[str, int] = {}
    for e in everything:
        counts[e.get("source") or "unknown"] = counts.get(e.get("source") or "unknown", 0) + 1
    return [s for s, n in sorted(counts.items()) if n >= min_images and s != "unknown"]


def _loso_init(args: argparse.Namespace, cells: dict) -> str:
    """``--loso_init``, or for ``best`` the initialisation with the best fine-tuning macro AUC at 100 % labels
    (in the first variant's rows)."""
    if args.loso_init != "best":
        return args.loso_init
    rows = {row: i for row, i, _ in arms(args.inits, args.variants[:1])}
    auc = {row: cells.get(f"finetune/{row}/1.0", {}).get("metrics", {}).get("auc_macro", {}) for row in rows}
    ranked = sorted((v["mean"], rows[row]) for row, v in auc.items() if v.get("mean") is not None)
    return ranked[-1][1] if ranked else args.inits[0]


def loso_sections(splits: dict[str, list[dict]], source: str) -> dict[str, list[dict]]:
    """Training and validation without ``source`` and without its patients' images from other sources (one patient
    can be in two collections: training on them would score the held-out source on patients seen); test: every
    image of ``source``."""
    test = [e for section in splits.values() for e in section if e.get("source") == source]
    patients = {e["patient"] for e in test if e.get("patient")}
    others = {s: [e for e in splits[s] if e.get("source") != source] for s in ("training", "validation")}
    kept = {s: [e for e in v if e.get("patient") not in patients] for s, v in others.items()}
    shared = sum(len(others[s]) - len(kept[s]) for s in kept)
    if shared:
        print(f"leave out {source}: {shared} images of other sources show its patients and leave training too")
    return {**kept, "test": test}


def leave_one_source_out(
    steps: ResumableSteps, args: argparse.Namespace, splits: dict, common: dict, weights: dict, cells: dict
) -> list[dict]:
    """Per source with enough images and per variant: train without it, test on it; against the in-distribution
    model of the same variant."""
    everything = [e for section in splits.values() for e in section]
    chosen = _loso_sources(everything, args.loso_min_images)
    init = args.loso_init_used = _loso_init(args, cells)
    seed = args.seeds[0]
    print(f"leave one source out: {len(chosen)} sources with >= {args.loso_min_images} images, init {init}", flush=True)
    base = {**common, "batch_size": args.batch_size, "max_epochs": args.finetune_epochs, "seed": seed}
    names, rows = class_names(), []
    for source in chosen:
        slug = "".join(c if c.isalnum() else "_" for c in source)
        sections = loso_sections(splits, source)
        datalist = write_datalist(
            args.out / "loso" / f"datalist_{slug}.json", sections, f"training without source {source}, test on it"
        )
        for row, _, variant in arms([init], args.variants):
            name = slug if variant == PLAIN_ROW else f"{variant}/{slug}"  # keeps earlier studies' folder
            ids = {**base, **variant_ids(variant, args), "datalist": str(datalist)}
            metrics = train_and_test(
                steps, "loso_" + name.replace("/", "_"), args.out / "loso" / name, ids, weights[init], args.force
            )
            held_out = None if args.dry_run else metrics.parent / PREDICTIONS_FILE
            in_dist = args.out / "runs" / "finetune" / row / "frac1" / f"seed{seed}" / "test" / PREDICTIONS_FILE
            source_row = study_report.source_row(source, sections["test"], everything, held_out, in_dist, names)
            rows.append({**source_row, "variant": variant})
    return rows


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """The output folder and the fixed split; returns the ids every run sets and the split's sections.

    ``--out``, ``--data``, ``--natural_weights`` and ``--init_file`` become absolute: the runs start in ``--out``."""
    args.out, args.data = args.out.resolve(), args.data.resolve()
    if args.natural_weights is not None:
        args.natural_weights = args.natural_weights.resolve()
    args.init_files = {name: path.resolve() for name, path in args.init_files.items()}
    make_output_folder(args.out)
    split, splits = write_split(args.data, args.out, args.val_fraction, args.test_fraction, args.split_seed)
    args.split_counts = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    common: dict[str, Any] = {"datalist": str(split), "dataset_dir": str(args.data), "image_size": args.image_size}
    if args.num_workers is not None:
        common["num_workers"] = args.num_workers
    if args.backbone is not None:
        common["backbone"] = args.backbone
    return common, splits


def write_results(args: argparse.Namespace, cells: dict, loso: list[dict], steps: ResumableSteps) -> dict:
    """The curves, report.md (printed too) and results.json; returns the summary results.json holds. A dry run
    prints the commands and writes them alone to results.json."""
    if args.dry_run:
        print("\n(dry run: no results)\n\nCommands (from any working directory):\n" + "\n".join(steps.commands))
        atomic_write_json({"commands": steps.commands, "dry_run": True}, args.out / "results.json")
        return {"commands": steps.commands}
    curves = study_report.draw_curves(cells, args.out, args.protocols, args.rows, args.fractions)
    report = study_report.write_report(args, cells, curves, loso, steps.commands)
    print("\n" + report, flush=True)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "metrics": {m: label for m, (label, _) in study_report.METRICS.items()},
        "cells": cells,
        "leave_one_source_out": loso,
        "curves": [str(p) for p in curves],
        "commands": steps.commands,
        "ran": steps.ran,
    }
    atomic_write_json(summary, args.out / "results.json", default=str)  # --init_file paths in a dict
    return summary


def run(args: argparse.Namespace) -> dict:
    """Run the study of ``args`` (scripts/study.py's settings, checked): the split, the pretrainings, the grid and
    leave-one-source-out; write report.md, results.json and the curves; returns the summary."""
    common, splits = prepare(args)
    steps = ResumableSteps(args.out, args.dry_run)
    weights, redo = pretrain_all(steps, common, args)
    cells = run_grid(steps, common, weights, redo, args)
    loso: list[dict] = []
    args.loso_init_used = args.loso_init
    if args.leave_one_source_out:
        loso = leave_one_source_out(steps, args, splits, common, weights, cells)
    return write_results(args, cells, loso, steps)
