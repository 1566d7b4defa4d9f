"""Shared fixtures: small synthetic radiographs, tiny datalists, and the real CXR collection when present."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bundle.workflow import parsed
from tests.helpers import run_bundle  # noqa: F401  (tests import it from here too)

ROOT = Path(__file__).resolve().parents[1]
SHARED_CXR = ROOT.parent / "shared" / "data" / "cxr-real"
SHARED_SCHEMA = ROOT.parent / "shared" / "reference" / "monai" / "meta_schema_20240725.json"
# the configs' classes, in the order of the labels, and their default encoder (without weights: no recipe)
CLASS_NAMES, BACKBONE = parsed("train", None, "class_names", "backbone")


def synthetic_cxr(height: int = 40, width: int = 56, seed: int = 0, label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A radiograph-like uint8 picture (bright body, two dark lungs, class-dependent texture) and its lung mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    body = 170 + 40 * np.exp(-(((xx - width / 2) / (width / 2.2)) ** 2))
    mask = np.zeros((height, width), np.uint8)
    for cx in (0.3 * width, 0.7 * width):
        inside = ((xx - cx) / (0.16 * width)) ** 2 + ((yy - 0.5 * height) / (0.33 * height)) ** 2 < 1
        mask[inside] = 1
    image = body - 110 * mask + 25 * label * mask * (rng.random((height, width)) > 0.7) + rng.normal(0, 6, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_dataset(root: Path, n_per_class: int = 4, size: tuple[int, int] = (40, 56), masks_every: int = 2) -> Path:
    """Write PNG images/masks and a datalist (two images per patient) under ``root``; returns the datalist path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    entries = []
    for label in range(len(CLASS_NAMES)):
        for i in range(n_per_class):
            image, mask = synthetic_cxr(*size, seed=label * 100 + i, label=label)
            name = f"c{label}_{i}.png"
            Image.fromarray(image).save(root / "images" / name)
            entry = {"image": f"images/{name}", "label": label, "patient": f"p{label}_{i // 2}"}
            if i % masks_every == 0:
                Image.fromarray(mask).save(root / "masks" / name)
                entry["mask"] = f"masks/{name}"
            entries.append(entry)
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": entries}))
    return path


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A 4-class dataset of 8 synthetic images per class in a temporary folder; returns the folder."""
    write_dataset(tmp_path / "data", n_per_class=8)
    return tmp_path / "data"


requires_shared = pytest.mark.skipif(
    not SHARED_CXR.is_dir(), reason=f"real CXR collection not found at {SHARED_CXR} (../shared is absent)"
)


def prepare_run(wf) -> None:
    """Evaluate every step of an initialised workflow's ``run`` list but the last (the engine's run).

    The configs check their settings, lock their folders, seed and load ``pretrained_ckpt`` at the start of
    ``run``; this does all of that without training.
    """
    for i in range(len(wf.parser["run"]) - 1):
        wf.parser.get_parsed_content(f"run#{i}")


def sample_workflow(name: str, tmp_path: Path, images: int = 8, **overrides):
    """An initialised ``ConfigWorkflow`` of ``configs/<name>.json`` for one quick epoch at 64 px on the first
    ``images`` entries of the embedded sample (outputs under ``tmp_path``)."""
    from monai.bundle import ConfigWorkflow

    sample = ROOT / "data" / "sample"
    entries = json.loads((sample / "datalist.json").read_text())["training"][:images]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))
    settings = dict(
        image_size=64,
        batch_size=4,
        num_workers=0,
        max_epochs=1,
        probe_interval=0,
        show_progress=False,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
    )
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / f"{name}.json"),
        workflow_type="train",
        logging_file=False,
        bundle_root=str(ROOT),
        datalist=str(datalist),
        dataset_dir=str(sample),
        **{**settings, **overrides},
    )
    wf.initialize()
    return wf


@pytest.fixture
def one_thread():
    """One torch thread for the test: for thousands of tiny tensor ops, thread hand-offs cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- one tiny run shared by the tests that check facts of a finished run ----------------------------------------

CONFIGS = ROOT / "configs"


@dataclass
class TinyRun:
    """A finished command on the tiny dataset: its folders, the settings every later command of the chain repeats,
    and what it printed."""

    folder: Path  # everything of the chain: data/, models/, train/, eval/, inference/, cwd/
    cwd: Path  # the working directory of every command: empty, and not the bundle root
    args: list[str]  # the settings shared by the chain's commands (no config file, no output folder)
    proc: subprocess.CompletedProcess = field(repr=False)  # the command, its status and output

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def models(self) -> Path:
        return self.folder / "models"

    @property
    def output(self) -> Path:
        return Path(self.proc.args[self.proc.args.index("--output_dir") + 1])

    @property
    def log(self) -> str:
        return self.proc.stdout + self.proc.stderr


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> TinyRun:
    """``configs/train.json`` for 2 epochs at 32 px on 8 synthetic images per class, run as a user would from a
    folder that is not the bundle root (absolute config paths and ``--bundle_root``).

    Lower-case booleans on the command line, no progress setting (the log goes to a pipe, not a terminal) and
    ``--resume false`` on a fresh folder: what ``tests/engines/test_progress.py`` checks. It keeps its resume state
    (``--keep_resume_state true``) for the tests that damage or extend it; they copy ``models`` first
    (``copy_models``).
    """
    folder = tmp_path_factory.mktemp("tiny_run")
    write_dataset(folder / "data", n_per_class=8)
    (folder / "cwd").mkdir()
    args = ["--bundle_root", str(ROOT), "--dataset_dir", str(folder / "data"), "--image_size", "32"]
    args += ["--batch_size", "4", "--num_workers", "0", "--amp", "false", "--multi_label", "false"]
    proc = run_bundle(
        "run", "--config_file", str(CONFIGS / "train.json"), "--ckpt_dir", str(folder / "models"),
        "--output_dir", str(folder / "train"), "--max_epochs", "2", "--resume", "false", "--keep_resume_state", "true",
        *args, cwd=folder / "cwd",
    )  # fmt: skip
    return TinyRun(folder, folder / "cwd", args, proc)


@pytest.fixture(scope="session")
def evaluated_tiny(trained_tiny: TinyRun) -> TinyRun:
    """``configs/evaluate.json`` (after train.json, as a config list) on ``trained_tiny``'s model and dataset, with
    two overlays of each kind, from the same working directory."""
    run = trained_tiny
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']"
    proc = run_bundle(
        "run", "--config_file", configs, "--ckpt_dir", str(run.models), "--output_dir", str(run.folder / "eval"),
        "--n_overlays", "2", *run.args, cwd=run.cwd,
    )  # fmt: skip
    return TinyRun(run.folder, run.cwd, run.args, proc)


@pytest.fixture(scope="session")
def inferred_tiny(trained_tiny: TinyRun) -> TinyRun:
    """``configs/inference.json`` with ``trained_tiny``'s model on the first 4 images of its folder, without
    overlays, from the same working directory."""
    run = trained_tiny
    args = ["--bundle_root", str(ROOT), "--dataset_dir", str(run.data / "images"), "--ckpt_dir", str(run.models)]
    args += ["--output_dir", str(run.folder / "inference"), "--image_size", "32", "--batch_size", "4"]
    args += ["--num_workers", "0", "--write_overlays", "false", "--max_images", "4"]
    proc = run_bundle("run", "--config_file", str(CONFIGS / "inference.json"), *args, cwd=run.cwd)
    return TinyRun(run.folder, run.cwd, args, proc)


def copy_models(run: TinyRun, to: Path) -> Path:
    """A copy of the run's ``models`` folder at ``to``, for a test that damages or extends it."""
    shutil.copytree(run.models, to)
    return to
