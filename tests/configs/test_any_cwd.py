"""Every config runs from any working directory, given absolute config paths and ``bundle_root``.

The working directory of each test is a fresh folder that is not the bundle root, and the tests check that nothing
is written there: every default path of a config hangs off ``bundle_root`` and every path given here is absolute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.atomic import atomic_save
from bundle.networks import MultiTaskNet
from tests.conftest import BACKBONE, CLASS_NAMES, ROOT

CONFIGS = ROOT / "configs"
TRAIN, EVALUATE, INFERENCE = (str(CONFIGS / f"{name}.json") for name in ("train", "evaluate", "inference"))
META = str(CONFIGS / "metadata.json")
PRETRAINING = ["pretrain_contrastive", "pretrain_inpainting", "pretrain_pretext"]
TINY = {"image_size": 32, "max_epochs": 1, "num_workers": 0, "batch_size": 4, "cache_rate": 0.0}


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch) -> Path:
    """An empty working directory that is not the bundle root."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert Path.cwd().resolve() != ROOT.resolve()
    return cwd


def cli_args(overrides: dict) -> list[str]:
    return [a for key, value in overrides.items() for a in (f"--{key}", str(value))]


@pytest.mark.parametrize(
    "config,workflow_type",
    [([TRAIN], "train"), ([TRAIN, EVALUATE], "train"), ([INFERENCE], "infer")],
    ids=["train", "train+evaluate", "inference"],
)
def test_workflow_properties_resolve_from_another_directory(config, workflow_type, tiny_dataset, tmp_path, elsewhere):
    """The model zoo's check: the required properties of the workflow type resolve, none is missing."""
    dataset = tiny_dataset / "images" if workflow_type == "infer" else tiny_dataset  # inference reads a folder
    if workflow_type == "infer" or EVALUATE in config:  # inference and evaluation check their weights first
        atomic_save(MultiTaskNet(len(CLASS_NAMES), BACKBONE).state_dict(), tmp_path / "models" / "model.pt")
    wf = ConfigWorkflow(
        config_file=config,
        meta_file=META,
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(ROOT),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        dataset_dir=str(dataset),
        **TINY,
    )
    wf.initialize()
    missing = wf.check_properties()
    assert not missing, f"{workflow_type} properties missing from {[Path(c).name for c in config]}: {missing}"
    assert wf.parser.get_parsed_content("bundle_root") == str(ROOT)
    wf.finalize()
    assert not any(elsewhere.iterdir()), f"written to the working directory: {sorted(os.listdir(elsewhere))}"


def test_train_evaluate_infer_from_another_directory(trained_tiny, evaluated_tiny, inferred_tiny):
    """``python -m monai.bundle run`` with absolute configs and --bundle_root, from a folder that is not the root
    (the shared tiny run: train, evaluate and inference from one such folder)."""
    assert trained_tiny.cwd.resolve() != ROOT.resolve()
    model = trained_tiny.models / "model.pt"
    assert model.is_file() and model.stat().st_size > 0
    state = torch.load(model, weights_only=True)
    assert any(k.startswith("encoder.") for k in state)

    metrics = json.loads((evaluated_tiny.output / "metrics.json").read_text())
    assert metrics["num_images"] > 0 and set(metrics["per_class"]) == set(CLASS_NAMES)

    predictions = inferred_tiny.output / "predictions.csv"
    assert predictions.is_file() and predictions.stat().st_size > 0
    rows = predictions.read_text().splitlines()
    assert len(rows) == 1 + 4  # a header and one row per image
    cwd = trained_tiny.cwd
    assert not any(cwd.iterdir()), f"written to the working directory: {sorted(os.listdir(cwd))}"


def read_config(path: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(path))
    parser.update({"bundle_root": str(ROOT), **overrides})
    return parser


@pytest.mark.parametrize("name", PRETRAINING)
def test_pretraining_config_parses_from_another_directory(name, elsewhere):
    """Defaults hang off bundle_root (not the working directory) and the network builds; nothing is trained."""
    parser = read_config(CONFIGS / f"{name}.json", image_size=32)
    for key in ("dataset_dir", "datalist", "ckpt_dir", "output_dir", "pretrained_out"):
        assert parser.get_parsed_content(key).startswith(str(ROOT)), key
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, torch.nn.Module) and sum(p.numel() for p in network.parameters()) > 0
    assert not any(elsewhere.iterdir())


def test_curriculum_stages_parse_from_another_directory(elsewhere):
    """The curriculum's stage configs are found relative to bundle_root, and each stage's network builds."""
    parser = read_config(CONFIGS / "pretrain_curriculum.json", image_size=32)
    assert parser.get_parsed_content("output_root").startswith(str(ROOT))
    defaults = {k: v for k, v in parser.get_parsed_content("stage_defaults").items() if v is not None and k[:1] != "_"}
    assert defaults["bundle_root"] == str(ROOT)
    stages = parser.get_parsed_content("stages")
    assert stages
    for stage in stages:
        path = ROOT / stage["config"]
        assert path.is_file(), stage["config"]
        network = read_config(path, **{**defaults, **stage.get("overrides", {})}).get_parsed_content("network_def")
        assert isinstance(network, torch.nn.Module), stage["config"]
    assert not any(elsewhere.iterdir())
