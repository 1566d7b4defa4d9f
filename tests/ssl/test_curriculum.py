"""Curricula: stages run in order from the previous weights; a rerun after an interruption skips finished stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle import checkpoints
from bundle.ssl.curriculum import STATE_FILE, CurriculumError, load_state, run_curriculum
from tests.conftest import ROOT, write_dataset

TINY = {"image_size": 32, "batch_size": 4, "num_workers": 0, "probe_interval": 0}
STAGES = [
    {
        "name": "inpainting",
        "config": "configs/pretrain_inpainting.json",
        "overrides": {"ssl_method": "inpainting", "max_epochs": 1},
    },
    {
        "name": "rotation",
        "config": "configs/pretrain_pretext.json",
        "overrides": {"ssl_method": "rotation", "max_epochs": 2},
    },
]


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    write_dataset(tmp_path / "data", n_per_class=2)
    return tmp_path / "data"


def test_shipped_curriculum_runs_two_one_epoch_stages(tiny_data, tmp_path):
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs/pretrain_curriculum.json"),
        workflow_type=None,
        bundle_root=str(ROOT),
        dataset_dir=str(tiny_data),
        ckpt_dir=str(tmp_path / "models"),
        max_epochs=1,
        image_size=32,
        batch_size=4,
        num_workers=0,
    )
    wf.initialize()
    wf.run()
    root = tmp_path / "models" / "curriculum"
    state = json.loads((root / STATE_FILE).read_text())
    assert list(state["stages"]) == ["01_inpainting", "02_simclr"]
    assert state["stages"]["02_simclr"]["initial_weights"] == state["stages"]["01_inpainting"]["handed_on"]
    final = torch.load(root / "pretrained_curriculum.pt", weights_only=True)
    simclr = torch.load(state["stages"]["02_simclr"]["exported"], weights_only=True)
    inpainting = torch.load(state["stages"]["01_inpainting"]["exported"], weights_only=True)
    # encoder from the last stage, decoder carried forward from inpainting
    assert torch.equal(final["encoder.conv1.weight"], simclr["encoder.conv1.weight"])
    assert not torch.equal(final["encoder.conv1.weight"], inpainting["encoder.conv1.weight"])
    decoder = "decoder.blocks.0.convs.conv_0.conv.weight"
    assert torch.equal(final[decoder], inpainting[decoder])


def test_rerun_after_interruption_resumes_stage_two_and_skips_stage_one(tiny_data, tmp_path, monkeypatch):
    root = tmp_path / "curriculum"
    where = {"defaults": {"bundle_root": str(ROOT), "dataset_dir": str(tiny_data), **TINY}, "bundle_root": str(ROOT)}
    epochs_saved: list[tuple[str, int]] = []
    original = checkpoints.TrainingCheckpointer._save_last

    def save_then_crash(self, engine):
        original(self, engine)
        epochs_saved.append((Path(self.ckpt_dir).name, engine.state.epoch))
        if Path(self.ckpt_dir).name.startswith("02_") and engine.state.epoch == 1 and crash:
            raise KeyboardInterrupt("simulated kill during stage 2")

    monkeypatch.setattr(checkpoints.TrainingCheckpointer, "_save_last", save_then_crash)
    crash = True
    with pytest.raises(KeyboardInterrupt):
        run_curriculum(STAGES, str(root), **where)
    state = load_state(str(root))
    assert list(state["stages"]) == ["01_inpainting"]  # stage 2 is not marked finished
    stage1 = Path(state["stages"]["01_inpainting"]["handed_on"])
    mtime = stage1.stat().st_mtime_ns
    assert (root / "02_rotation" / "pretrain_rotation_checkpoint.pt").is_file()
    assert epochs_saved == [("01_inpainting", 1), ("02_rotation", 1)]

    crash = False
    epochs_saved.clear()
    final = run_curriculum(STAGES, str(root), **where)
    assert epochs_saved == [("02_rotation", 2)]  # stage 1 skipped, stage 2 continued at its second epoch
    assert stage1.stat().st_mtime_ns == mtime
    state = load_state(str(root))
    assert list(state["stages"]) == ["01_inpainting", "02_rotation"] and state["final"] == final
    weights = torch.load(final, weights_only=True)
    assert {k.split(".")[0] for k in weights} == {"encoder", "decoder", "segmentation_head"}

    epochs_saved.clear()
    assert run_curriculum(STAGES, str(root), **where) == final and epochs_saved == []  # nothing left
    changed = [STAGES[0], {**STAGES[1], "overrides": {"ssl_method": "rotation", "max_epochs": 3}}]
    with pytest.raises(CurriculumError, match="02_rotation was finished with other settings"):
        run_curriculum(changed, str(root), **where)


@pytest.mark.parametrize(
    "stages,message",
    [
        ([], "non-empty list"),
        ([{"config": "configs/nope.json"}], r"stages\[0\]: config file not found"),
        ([{"config": "configs/pretrain_pretext.json", "epochs": 3}], r"stages\[0\]: unknown keys \['epochs'\]"),
        ([{"config": "configs/pretrain_pretext.json", "overrides": {"ckpt_dir": "x"}}], "set by the curriculum"),
        ([{"config": "configs/pretrain_pretext.json"}] * 2, r"stages\[1\]: stage name 'pretrain_pretext' is used"),
    ],
)
def test_bad_stages_are_named(stages, message, tmp_path):
    with pytest.raises(CurriculumError, match=message):
        run_curriculum(stages, str(tmp_path), bundle_root=str(ROOT))
