"""Curricula: stages run in order from the previous weights; a rerun after an interruption skips finished stages;
a curriculum that cannot run as declared stops before any stage trains, with one message naming the stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle import checkpoints
from bundle.errors import DebugUserError, UserError
from bundle.ssl.curriculum import STATE_FILE, CurriculumError, load_state, run_curriculum
from tests.conftest import ROOT, write_dataset
from tests.helpers import bundle_in_process

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
    with pytest.raises(UserError, match="02_rotation was finished with other settings"):
        run_curriculum(changed, str(root), **where)


@pytest.mark.parametrize(
    "stages,message",
    [
        ([], "non-empty list"),
        ([{"config": "configs/nope.json"}], r"stages\[0\]: config file not found"),
        ([{"config": "configs/pretrain_pretext.json", "epochs": 3}], r"stages\[0\]: unknown keys \['epochs'\]"),
        ([{"config": "configs/pretrain_pretext.json", "overrides": {"ckpt_dir": "x"}}], "set by the curriculum"),
        ([{"config": "configs/pretrain_pretext.json"}] * 2, r"stages\[1\]: stage name 'pretrain_pretext' is used"),
        (
            [{"config": "configs/pretrain_pretext.json", "overrides": {"ssl_methd": "jigsaw"}}],
            r"stages\[0\] \(pretrain_pretext\): ssl_methd: no such setting in configs/pretrain_pretext.json; "
            r"did you mean ssl_method\?",
        ),
        (
            [{"config": "configs/pretrain_contrastive.json", "overrides": {"views_on": "device", "train#viewz": 1}}],
            r"(?s)stages\[0\] \(pretrain_contrastive\): 2 ids .*views_on: it was removed in 0.9.2"
            r".*train#viewz: did you mean train#views\?",
        ),
    ],
)
def test_bad_stages_are_named(stages, message, tmp_path):
    with pytest.raises(UserError, match=message):
        run_curriculum(stages, str(tmp_path), bundle_root=str(ROOT))
    assert not (tmp_path / STATE_FILE).exists()


def test_an_id_given_to_every_stage_must_be_each_stages(tmp_path):
    stages = [{"config": "configs/pretrain_pretext.json"}]
    message = r"curriculum stage 01_pretrain_pretext \(configs/pretrain_pretext.json\): amp_dtyp: no such setting"
    with pytest.raises(UserError, match=message):
        run_curriculum(stages, str(tmp_path), defaults={"amp_dtyp": "float16"}, bundle_root=str(ROOT))
    assert not (tmp_path / STATE_FILE).exists()


def test_a_bad_setting_of_a_later_stage_stops_before_the_first_trains(tiny_data, tmp_path):
    stages = [STAGES[0], {**STAGES[1], "overrides": {"ssl_method": "rotation", "max_epochs": 0}}]
    where = {"defaults": {"bundle_root": str(ROOT), "dataset_dir": str(tiny_data), **TINY}, "bundle_root": str(ROOT)}
    message = r"(?s)curriculum stage 02_rotation \(configs/pretrain_pretext.json\): .*max_epochs: 0"
    with pytest.raises(UserError, match=message):
        run_curriculum(stages, str(tmp_path / "c"), **where)
    assert not (tmp_path / "c" / "01_inpainting").exists() and not (tmp_path / "c" / STATE_FILE).exists()


def test_debug_mode_keeps_the_cause(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DEBUG", "1")
    with pytest.raises(DebugUserError, match="config file not found") as raised:
        run_curriculum([{"config": "configs/nope.json"}], str(tmp_path), bundle_root=str(ROOT))
    assert isinstance(raised.value.__cause__, CurriculumError)


def test_corrupt_state_file_is_named(tmp_path):
    (tmp_path / STATE_FILE).write_text('{"stages": ')
    with pytest.raises(CurriculumError, match="unreadable state file"):
        load_state(str(tmp_path))


# The command (configs/pretrain_curriculum.json), run in this interpreter: each case fails before any stage
# trains. One case per kind of mistake runs here; test_bad_stages_are_named and the rerun test above call
# run_curriculum, what the command runs, with the others (a missing stage config, a finished stage changed since).
# (overrides, what the state file holds first or None, texts the message must hold)
COMMAND_CASES = {
    "override of an unknown id": (
        ["--stages#1#overrides#max_epoch", "3"],
        None,
        ["stages[1] (simclr): max_epoch: no such setting in configs/pretrain_contrastive.json", "mean max_epochs"],
    ),
    "bad setting of the last stage": (
        ["--stages#1#overrides#ssl_method", "simclear"],
        None,
        ["curriculum stage 02_simclr", "ssl_method", "'simclear'"],
    ),
    "corrupt state file": ([], '{"stages": {', [STATE_FILE, "unreadable state file"]),
}


@pytest.mark.parametrize("case", list(COMMAND_CASES))
def test_command_stops_before_training_with_one_message(case, tmp_path):
    overrides, state, named = COMMAND_CASES[case]
    root = tmp_path / "models" / "curriculum"
    if state is not None:
        root.mkdir(parents=True)
        (root / STATE_FILE).write_text(state)
    proc = bundle_in_process(
        "run", "--config_file", "configs/pretrain_curriculum.json", "--ckpt_dir", str(tmp_path / "models"), *overrides
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for text in named:
        assert text in output, (text, output[-3000:])
    assert not list(root.glob("*/*.pt")) and not (root / "pretrained_curriculum.pt").exists()
